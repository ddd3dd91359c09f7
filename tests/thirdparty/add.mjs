// Add content through `/add` with the third-party JS client `@nftstorage/ipfs-cluster`, as an
// application would: one file (the library's defaults: CIDv1, raw leaves, a buffered answer), one
// with CIDv0 and no raw leaves, and a directory of files named by their paths. Prints one JSON
// object with what the library returned (`error` when it threw), without the peer IDs.
//
//   node add.mjs <cluster-url>

import { Cluster } from '@nftstorage/ipfs-cluster'

const cluster = new Cluster(process.argv[2])
const strip = (r) => JSON.parse(JSON.stringify(r, (k, v) => (k === 'allocations' ? undefined : v)))
const out = {}
try {
  const big = new Uint8Array(300000).map((_, i) => i % 251)
  out.file = strip(await cluster.add(new File([big], 'data.bin'), {
    name: 'data.bin', metadata: { org: 'hrdag' }
  }))
  out.v0 = strip(await cluster.add(new File(['hello world\n'], 'hello.txt'), {
    cidVersion: 0, rawLeaves: false
  }))
  out.dir = strip(await cluster.addDirectory([
    new File(['a'], 'tree/a.txt'),
    new File(['b'], 'tree/sub/b.txt'),
    new File([big], 'tree/sub/big.bin')
  ], { name: 'tree', metadata: { org: 'witness' } }))
} catch (e) {
  out.error = String(e)
}
console.log(JSON.stringify(out))
