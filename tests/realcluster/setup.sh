#!/usr/bin/env bash
# Builds the real IPFS Cluster (ipfs-cluster-service and ipfs-cluster-ctl, v1.1.5 and v1.1.6) and kubo
# from the Go module proxy into a cache outside the work tree, one folder per version:
#
#   $LEDGER_REALCLUSTER_CACHE/<module>-<version>/bin/<binary>     (default ~/.cache/ledger/realcluster)
#
# Idempotent: a version whose binaries are there is not built again. Prints what it built and how long
# it took. The tests find the binaries in the same folders (tests/util/realcluster.rs).
set -euo pipefail

cache=${LEDGER_REALCLUSTER_CACHE:-$HOME/.cache/ledger/realcluster}
cluster_versions=${LEDGER_CLUSTER_VERSIONS:-"v1.1.6 v1.1.5"}
# kubo v0.43.1 replaces go-libp2p with a fork the proxy does not serve (403 for
# github.com/lidel/go-libp2p@v0.0.0-20260914191659-9c4ee60cf924); v0.43.0 is the newest that builds.
kubo_version=${LEDGER_KUBO_VERSION:-v0.43.0}

if ! command -v go >/dev/null; then
  echo "setup.sh: go not found; install Go >= 1.26 (the cluster's v1.1.6 go.mod asks for it)" >&2
  exit 2
fi
mkdir -p "$cache"
# The module and build caches live beside the binaries, so a second run downloads and builds nothing.
export GOPATH="$cache/gopath" GOCACHE="$cache/gocache" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
export CGO_ENABLED=0
# The checksum database has no record of ipfs-cluster v1.1.5 (its lookup answers 404), so the module's
# own sum is checked here instead, against the sums below; its dependencies are checked as usual.
export GONOSUMDB=github.com/ipfs-cluster/ipfs-cluster
# v1.1.5 asks for Go 1.25 and does not build with 1.26 (cockroachdb/swiss, a pebble dependency, links
# into runtime internals that 1.26 changed): its build uses the Go 1.25 toolchain, which the Go module
# proxy serves as the module golang.org/toolchain (downloaded once into the cache).
declare -A toolchains=(
  [github.com/ipfs-cluster/ipfs-cluster@v1.1.5]="go1.25.5"
)
declare -A sums=(
  [github.com/ipfs-cluster/ipfs-cluster@v1.1.6]="h1:00hKZtLwl8Ufy28QdXVuFdlZBmIlcYyxFpRBnEb6WbA="
  [github.com/ipfs-cluster/ipfs-cluster@v1.1.5]="h1:MVkb19qzn1K0DYehtVXxqVaY55ioc5CcLEK7iJW+0AM="
)

# build NAME MODULE VERSION CMD... : the module's commands, built from the module's own go.mod and go.sum
# into cache/NAME-VERSION/bin. (`go install MODULE/CMD@VERSION` would do the same, but it first reads
# the module's version list for deprecations, which the proxy refuses for ipfs-cluster with a 403.)
build() {
  local name=$1 module=$2 version=$3; shift 3
  local dir="$cache/$name-$version" missing=()
  for cmd in "$@"; do
    [ -x "$dir/bin/$(basename "$cmd")" ] || missing+=("$cmd")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "realcluster: $name $version already built in $dir/bin"
    return
  fi
  local start=$SECONDS src
  echo "realcluster: building $name $version (${missing[*]}) ..."
  local json want sum src
  export GOTOOLCHAIN=${toolchains["$module@$version"]:-local}
  json=$(go mod download -json "$module@$version") || {
    echo "setup.sh: go mod download $module@$version failed:" >&2
    echo "$json" >&2
    exit 2
  }
  want=${sums["$module@$version"]:-}
  sum=$(sed -n 's/^\t"Sum": "\(.*\)",$/\1/p' <<<"$json")
  if [ -n "$want" ] && [ "$sum" != "$want" ]; then
    echo "setup.sh: $module@$version has sum $sum, expected $want" >&2
    exit 2
  fi
  src=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$json")
  [ -d "$src" ] || { echo "setup.sh: go mod download $module@$version gave no source folder" >&2; exit 2; }
  mkdir -p "$dir/bin"
  for cmd in "${missing[@]}"; do
    (cd "$src" && go build -trimpath -o "$dir/bin/$(basename "$cmd").tmp" "./$cmd")
    mv "$dir/bin/$(basename "$cmd").tmp" "$dir/bin/$(basename "$cmd")"
  done
  echo "realcluster: built $name $version in $((SECONDS - start)) s: $(ls "$dir/bin" | tr '\n' ' ')"
}

for v in $cluster_versions; do
  build ipfs-cluster github.com/ipfs-cluster/ipfs-cluster "$v" cmd/ipfs-cluster-service cmd/ipfs-cluster-ctl
done
build kubo github.com/ipfs/kubo "$kubo_version" cmd/ipfs
