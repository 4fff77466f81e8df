#!/usr/bin/env bash
# Push a built image to the site's image registry, so every Docker host can pull it.
#
# Usage: push-image.sh [TAG]     TAG defaults to the tag build-images.sh wrote to
#                                $CODEYARD_STATE/singleuser-image
# Env:   CODEYARD_REGISTRY       registry address host:port (default: the one ensure-registry.sh
#                                wrote to $CODEYARD_STATE/registry/address); none: nothing
#                                to do
#        CODEYARD_REGISTRY_USER / CODEYARD_REGISTRY_PASSWORD  login, when the registry needs one
#        CODEYARD_REGISTRY_CA    CA file to check the registry with (default
#                                $CODEYARD_STATE/registry/ca.crt when it exists)
# The image goes to <registry>/<repository>:<tag>, the same repository and tag as TAG (e.g.
# 192.0.2.2:5000/codeyard/singleuser:<hash>). Tags are content hashes, so a tag the registry
# already holds is the same image: the push is skipped. The login goes to a throwaway docker
# config folder, never to ~/.docker. Output: the last stdout line is the registry reference,
# or "no-registry".
set -euo pipefail

STATE="${CODEYARD_STATE:-${CODEYARD_CACHE:-$HOME/.cache/codeyard}/state}"
DOCKER=/usr/bin/docker
log() { echo "[push-image] $*" >&2; }

TAG="${1:-$(cat "$STATE/singleuser-image" 2>/dev/null || true)}"
[ -n "$TAG" ] || { log "ERROR: no image tag given and $STATE/singleuser-image is missing"; exit 1; }
REGISTRY="${CODEYARD_REGISTRY:-$(cat "$STATE/registry/address" 2>/dev/null || true)}"
REGISTRY="${REGISTRY#https://}"
REGISTRY="${REGISTRY%/}"
if [ -z "$REGISTRY" ]; then
    log "no registry configured (CODEYARD_REGISTRY): hosts get $TAG copied over their engine API"
    echo no-registry
    exit 0
fi
CA="${CODEYARD_REGISTRY_CA:-}"
[ -n "$CA" ] || { [ -s "$STATE/registry/ca.crt" ] && CA="$STATE/registry/ca.crt"; } || true
USER_NAME="${CODEYARD_REGISTRY_USER:-}"
PASSWORD="${CODEYARD_REGISTRY_PASSWORD:-}"

REPO="${TAG%:*}"
VERSION="${TAG##*:}"
[ "$REPO" != "$TAG" ] || VERSION=latest
REF="$REGISTRY/$REPO:$VERSION"

curl_args=(-s -o /dev/null -w '%{http_code}' --max-time 10)
[ -n "$CA" ] && curl_args+=(--cacert "$CA")
[ -n "$USER_NAME" ] && curl_args+=(-u "$USER_NAME:$PASSWORD")
code="$(curl "${curl_args[@]}" \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "https://$REGISTRY/v2/$REPO/manifests/$VERSION" || true)"
case "$code" in
200) log "$REF is in the registry already; skipping the push."; echo "$REF"; exit 0 ;;
401) log "ERROR: the registry $REGISTRY refused the credentials (401): check CODEYARD_REGISTRY_USER/PASSWORD"; exit 1 ;;
000) log "ERROR: no answer from https://$REGISTRY (wrong address, not running, or its CA is not trusted)"; exit 1 ;;
esac

CONFIG="$(mktemp -d "${TMPDIR:-/tmp}/codeyard-push.XXXXXX")"
trap 'rm -rf "$CONFIG"' EXIT
export DOCKER_CONFIG="$CONFIG"
if [ -n "$USER_NAME" ]; then
    printf '%s' "$PASSWORD" | "$DOCKER" login -u "$USER_NAME" --password-stdin "$REGISTRY" >&2
fi
"$DOCKER" tag "$TAG" "$REF"
log "Pushing $REF..."
start=$SECONDS
"$DOCKER" push "$REF" >&2
log "Pushed $REF in $((SECONDS - start)) s."
echo "$REF"
