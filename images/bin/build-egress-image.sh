#!/usr/bin/env bash
# Build the Codeyard egress proxy image (images/egress), tagged by a hash of its inputs.
#
# Usage: build-egress-image.sh
# Env:   BASE_IMAGE      base image (default: the offline debootstrap base from build-base.sh)
#        CODEYARD_STATE  state dir (default $CODEYARD_CACHE/state, $HOME/.cache/codeyard/state)
#        FORCE_BUILD=1   build even when the hash tag exists
# Output: codeyard/egress:<hash> and :latest; the last stdout line is the tag, also written
# to $CODEYARD_STATE/egress-image. Progress and build logs go to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${CODEYARD_STATE:-${CODEYARD_CACHE:-$HOME/.cache/codeyard}/state}"
DOCKER=/usr/bin/docker
log() { echo "[build-egress] $*" >&2; }
mkdir -p "$STATE"

"$HERE/ensure-docker.sh" "$STATE" >/dev/null

BASE="${BASE_IMAGE:-}"
if [ -n "$BASE" ] && ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
    "$DOCKER" pull "$BASE" >&2 || { log "Cannot pull $BASE; using the offline base."; BASE=""; }
fi
if [ -z "$BASE" ]; then
    BASE="$("$HERE/build-base.sh" | tail -n 1)"
fi

HASH="$( {
    echo "base=$BASE ($("$DOCKER" image inspect -f '{{.Id}}' "$BASE"))"
    sha256sum "$HERE"/../egress/* | sed 's|  .*/|  |'
} | sha256sum | cut -c1-16)"
TAG="codeyard/egress:$HASH"

if [ "${FORCE_BUILD:-0}" != 1 ] && "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG is up to date; skipping the build."
else
    log "Building $TAG from $BASE..."
    DOCKER_BUILDKIT=0 "$DOCKER" build -t "$TAG" --build-arg "BASE_IMAGE=$BASE" \
        --label "org.codeyard.inputs-hash=$HASH" "$HERE/../egress" >&2
fi
"$DOCKER" tag "$TAG" codeyard/egress:latest
echo "$TAG" >"$STATE/egress-image"
echo "$TAG"
