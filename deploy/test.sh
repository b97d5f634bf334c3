#!/usr/bin/env bash
# Runs laneIM's whole test suite on a fresh Debian machine that has Go.
#
# It installs, from Debian's packages, the servers the tests run against
# (redis-server, mariadb-server, chromium) when they are missing, and the
# TypeScript SDK's npm packages (typescript, playwright-core, into
# gateways/comet/sdk) for its Node and Chromium tests, then
# builds the container image and runs deploy/'s tests (the nested module of
# the image tool and the Kubernetes manifests) and every Go benchmark once,
# then `go test -race ./...`.
# The tests start their own servers on free loopback ports in temporary
# folders (see internal/testinfra), so nothing here touches a system-wide
# service and several runs can share a machine.
#
# Extra arguments go to `go test`, e.g. deploy/test.sh -run E2E ./internal/app/
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ] || [ -x "/usr/sbin/$1" ]; }
have redis-server || packages+=(redis-server)
have mariadbd || packages+=(mariadb-server)
have chromium || packages+=(chromium)
have mariadb-install-db || packages+=(mariadb-server)

if [ ${#packages[@]} -gt 0 ]; then
  echo "deploy/test.sh: installing ${packages[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # Debian may try to start the packages' own services; the tests do not
  # use them (each test starts its servers on free ports).
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${packages[@]}" | sort -u) >/dev/null
fi

if ! have node || ! have npm; then
  echo "deploy/test.sh: NOTE: node/npm not found: TestSDK (the TypeScript SDK and the web page) will be SKIPPED; install Node.js >= 20" >&2
elif [ ! -d gateways/comet/sdk/node_modules/typescript ] || [ ! -d gateways/comet/sdk/node_modules/playwright-core ]; then
  echo "deploy/test.sh: npm ci in gateways/comet/sdk" >&2
  (cd gateways/comet/sdk && npm ci --no-audit --no-fund --silent)
fi

export PATH="$PATH:/usr/sbin"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(./...)
if [ -z "${LANEIM_TEST_SCYLLA:-}" ]; then
  echo "deploy/test.sh: NOTE: the Scylla history-store contract suite will be SKIPPED (no Scylla here); set LANEIM_TEST_SCYLLA=host:9042 to run it" >&2
fi
# With no arguments, the whole suite: first the container image and the
# Kubernetes manifests, whose tests live in a nested module (deploy/go.mod,
# kept apart for its heavy dependencies, so ./... below does not reach it).
# build.sh builds the image offline into deploy/image/out; deploy/image's
# tests run it (with docker or podman when one works, else unpacked), and
# deploy/k8s's render the overlays and decode them strictly.
if [ $# -eq 0 ]; then
  echo "deploy/test.sh: the container image (deploy/image/build.sh) and deploy/'s tests" >&2
  bash deploy/image/build.sh deploy/image/out
  (cd deploy && LANEIM_IMAGE="$PWD/image/out/laneim.tar" LANEIM_IMAGE_BINARY="$PWD/image/out/laneim" go test -count=1 -timeout 15m ./...)
  # Every Go benchmark once (one iteration each, no timing asserted), so
  # that none rots between the performance rounds that run them for real.
  echo "deploy/test.sh: every benchmark once (go test -run '^$' -bench . -benchtime 1x)" >&2
  go test -count=1 -run '^$' -bench . -benchtime 1x -timeout 10m ./...
fi

# Most tests wait on the servers they start rather than compute, so four
# test binaries run at once on two cores (-p 4); and the race detector's
# one-second pause at each test binary's exit is skipped. Together they
# take the suite from ~2 min to ~1 min here.
export GORACE="${GORACE:-atexit_sleep_ms=0}"
echo "deploy/test.sh: go test -race -p 4 ${args[*]}" >&2
exec go test -race -count=1 -p 4 -timeout 45m "${args[@]}"
