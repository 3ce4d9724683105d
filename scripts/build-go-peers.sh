#!/usr/bin/env bash
# Build the Go interop peers (test/peers/go: greeter-server, greeter-client)
# and the Go side of the scale bench (fleet, wide-client) once, cached under
# .tmp/go-peers/<hash>/ where the hash covers their sources and the Go
# version; prints that directory. A cold build of etcd's client and grpc-go
# takes half a minute or more here, a cached one is free. GOPATH mode on
# Debian's source tree (GO111MODULE=off, GOPATH=<temp>:/usr/share/gocode,
# the sources copied to <temp>/src/meshpeers/); Go's build cache lives under
# .tmp/ too, so a source change rebuilds only the peers. Used by the test
# set-up (scripts/test.sh) and by test/harness/peer-go.ts, so a single test
# file run on its own builds them the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
src=test/peers/go
hash=$( { go version; (cd "$src" && find . -type f | LC_ALL=C sort | while read -r f; do printf '%s\0' "$f"; sha256sum < "$f"; done); } | sha256sum | cut -c1-16)
dir=.tmp/go-peers/$hash
# --check: exit 0 when the peers are built already, 1 when a build is due.
bins="greeter-server greeter-client fleet wide-client"
built() { for b in $bins; do [ -x "$dir/$b" ] || return 1; done; }
if [ "${1:-}" = --check ]; then built; exit; fi
if ! built; then
  gopath=$(mktemp -d /tmp/mesh-gopath-XXXXXX)
  trap 'rm -rf "$gopath"' EXIT
  mkdir -p "$gopath/src" "$gopath/bin" .tmp/go-build-cache .tmp/go-peers
  cp -r "$src" "$gopath/src/meshpeers"
  GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$PWD/.tmp/go-build-cache" GOFLAGS='' \
    bash -c "cd '$gopath' && go build -o '$gopath/bin/' $(printf 'meshpeers/%s ' $bins)"
  # Built aside and moved into place, so a half-written cache entry never exists.
  rm -rf "$dir"
  mv "$gopath/bin" "$dir"
fi
echo "$PWD/$dir"
