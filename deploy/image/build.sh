#!/usr/bin/env bash
# Builds laneIM's container image without a container runtime and without
# pulling anything: a static laneim binary (CGO_ENABLED=0) on an empty
# base, assembled by deploy/image (go-containerregistry, offline).
#
#   deploy/image/build.sh [OUT_DIR]     # default deploy/image/out
#
# writes OUT_DIR/laneim.tar (for `docker load -i` / `podman load -i`) and
# OUT_DIR/oci (an OCI image layout). The tag is $LANEIM_IMAGE_TAG
# (default laneim:dev); GOARCH cross-builds (e.g. GOARCH=arm64);
# SOURCE_DATE_EPOCH fixes the timestamps (default: the Unix epoch, so the
# same sources give the same image). The system's CA bundle is included
# when present, for servers with public certificates.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here/out}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
tag="${LANEIM_IMAGE_TAG:-laneim:dev}"
arch="${GOARCH:-$(go env GOARCH)}"

(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath -ldflags='-s -w' -o "$out/laneim" .)

args=(--binary "$out/laneim" --arch "$arch" --tag "$tag" --tar "$out/laneim.tar" --oci "$out/oci")
[ ! -f /etc/ssl/certs/ca-certificates.crt ] || args+=(--ca-bundle /etc/ssl/certs/ca-certificates.crt)
if rev="$(git -C "$root" rev-parse HEAD 2>/dev/null)"; then args+=(--revision "$rev"); fi
# The tool runs on this machine, whatever GOARCH the image is for.
(cd "$root/deploy" && GOARCH= go run ./image "${args[@]}")
echo "deploy/image/build.sh: $out/laneim.tar and $out/oci ($tag, linux/$arch)" >&2
