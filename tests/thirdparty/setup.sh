#!/usr/bin/env bash
# Install the third-party IPFS Cluster client used by tests/thirdparty.rs.
# Idempotent: does nothing when node_modules already holds the locked package.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "tests/thirdparty/setup.sh: node and npm are required (Node >= 18, for global fetch)" >&2
    exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
    echo "tests/thirdparty/setup.sh: Node >= 18 is required, found $(node --version)" >&2
    exit 1
fi

if [ -f node_modules/@nftstorage/ipfs-cluster/package.json ] \
    && node -e 'process.exit(require("./node_modules/@nftstorage/ipfs-cluster/package.json").version === require("./package-lock.json").packages["node_modules/@nftstorage/ipfs-cluster"].version ? 0 : 1)'; then
    exit 0
fi

npm ci --no-audit --no-fund --loglevel=error
