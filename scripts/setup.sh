#!/usr/bin/env bash
# Bring a fresh machine to the point where etcd-mesh runs: the etcd binaries
# (Debian's etcd-server/etcd-client, when `etcd` is missing), npm deps, build.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: etcd itself; for the tests only, docker-compose (v1) to
# validate docker-compose.yml (`config -q` needs no engine) and the interop
# peers (test/peers): gRPC's C core for Python, and Go with etcd's naming
# packages and grpc-go as GOPATH sources; chromium, to open the load report
# in the tests; faketime, iproute2 and iptables for the lock's clock-step
# and the cross-host tests. grpcio is checked with Debian's
# own interpreter: `python3` on PATH may be another one (pyenv, venv).
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
if [ "${MESH_SETUP_DEMO_ONLY:-}" != 1 ]; then
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  /usr/bin/python3 -c 'import grpc' >/dev/null 2>&1 || missing+=(python3 python3-grpcio)
  command -v go >/dev/null 2>&1 || missing+=(golang-go)
  [ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3/naming/resolver ] || missing+=(golang-etcd-server-dev)
  [ -d /usr/share/gocode/src/google.golang.org/grpc/resolver ] || missing+=(golang-google-grpc-dev)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  # The lock's wall-clock-step tests (test/coordination-lock-pause) and the
  # cross-host test in network namespaces (test/scale-advertise).
  [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing+=(faketime)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} from Debian" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm ci when node_modules is missing or older than the lockfile.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
else
  npm run --silent build
fi
