// Drive an IPFS Cluster REST API (here: `ledger sim serve`) with the third-party JS client
// `@nftstorage/ipfs-cluster`, and print one JSON object with everything the library returned.
//
//   node client.mjs <cluster-url> [--basic-auth USER:PASS]
//
// The library is used exactly as an application would use it; `fetch` is only wrapped to record
// the requests it sends (method, URL, status) so the caller can check the wire format too.
// Any library error prints {"error":{...},"requests":[...]} and exits 1.

import { Cluster } from '@nftstorage/ipfs-cluster'

const args = process.argv.slice(2)
const url = args[0]
if (!url) {
  console.error('usage: node client.mjs <cluster-url> [--basic-auth USER:PASS]')
  process.exit(2)
}
if (typeof globalThis.fetch !== 'function') {
  console.error(`client.mjs needs Node >= 18 (global fetch); this is ${process.version}`)
  process.exit(2)
}
const headers = {}
const authIdx = args.indexOf('--basic-auth')
if (authIdx >= 0) {
  const cred = args[authIdx + 1]
  if (!cred || !cred.includes(':')) {
    console.error('--basic-auth needs USER:PASS')
    process.exit(2)
  }
  headers.Authorization = 'Basic ' + Buffer.from(cred).toString('base64')
}

// Record every request the library makes.
const requests = []
const realFetch = globalThis.fetch
globalThis.fetch = async (input, init = {}) => {
  const entry = { method: init.method || 'GET', url: String(input), status: null }
  requests.push(entry)
  const res = await realFetch(input, init)
  entry.status = res.status
  return res
}

const cluster = new Cluster(url, { headers })

// The pins to make: name and metadata with characters that need URL encoding, three
// different replication settings, and one expiry in the future (sent as toISOString(),
// i.e. with milliseconds).
const pins = [
  {
    cid: 'QmTgBV75rpqCE55aFyJxBMd1z8ennrr5yQH3SqbEgjUDME',
    options: {
      name: 'dataset 0001/file-17.csv',
      replicationFactorMin: 2,
      replicationFactorMax: 2,
      metadata: { org: 'hrdag', project: 'x', note: 'a b&c=d+e/é' }
    }
  },
  {
    cid: 'bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi',
    options: {
      name: 'witness-video.mp4',
      replicationFactorMin: 1,
      replicationFactorMax: 3,
      metadata: { org: 'hrdag', project: 'y' },
      expireAt: new Date('2031-02-03T04:05:06.000Z')
    }
  },
  {
    cid: 'QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG',
    options: {
      name: 'to-be-removed',
      replicationFactorMin: -1,
      replicationFactorMax: -1,
      metadata: { org: 'hrdag', project: 'x' }
    }
  }
]

let step = 'start'
const out = { url, sent: pins.map((p) => ({ cid: p.cid, ...p.options })) }

async function run() {
  step = 'version'
  out.version = await cluster.version()

  step = 'info'
  out.info = await cluster.info()

  step = 'peerList'
  out.peers = await cluster.peerList()

  step = 'pin'
  out.pinned = []
  for (const p of pins) {
    out.pinned.push(await cluster.pin(p.cid, p.options))
  }

  step = 'allocation'
  out.allocations = []
  for (const p of pins) {
    out.allocations.push(await cluster.allocation(p.cid))
  }

  // The library has no call for GET /allocations (the pinset listing); its listing is
  // statusAll() = GET /pins (NDJSON stream).
  step = 'statusAll'
  out.statusAll = await cluster.statusAll()

  step = 'statusAll(cids)'
  out.statusAllCids = await cluster.statusAll({ cids: pins.map((p) => p.cid) })

  step = 'status'
  out.status = await cluster.status(pins[0].cid)

  step = 'unpin'
  out.unpinned = await cluster.unpin(pins[2].cid)

  step = 'allocation after unpin'
  try {
    const still = await cluster.allocation(pins[2].cid)
    out.afterUnpin = { ok: true, pin: still }
  } catch (err) {
    if (!err.response) throw err
    out.afterUnpin = {
      ok: false,
      status: err.response.status,
      message: err.message,
      body: await err.response.text()
    }
  }

  step = 'statusAll after unpin'
  out.statusAllAfterUnpin = await cluster.statusAll()

  out.requests = requests
}

try {
  await run()
  process.stdout.write(JSON.stringify(out) + '\n')
} catch (err) {
  const error = { step, message: String(err && err.message), stack: err && err.stack }
  if (err && err.response) {
    error.status = err.response.status
    try {
      error.body = await err.response.text()
    } catch (_) {
      error.body = null
    }
  }
  process.stdout.write(JSON.stringify({ error, partial: out, requests }) + '\n')
  process.exit(1)
}
