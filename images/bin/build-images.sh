#!/usr/bin/env bash
# Build the Codeyard single-user image, tagged by a hash of its inputs.
#
# Usage: build-images.sh
# Env:   BASE_IMAGE           base image (default: the offline debootstrap base from
#                             build-base.sh; also used when BASE_IMAGE cannot be had)
#        INSTALL_JUPYTER_AI   1 (default) or 0
#        CODEYARD_STATE       state dir (default $CODEYARD_CACHE/state, $HOME/.cache/codeyard/state)
#        FORCE_BUILD=1        build even when the hash tag exists
#        CODEYARD_REGISTRY    when set (host:port), push the image there (push-image.sh)
# Output: codeyard/singleuser:<hash> and :latest; the last stdout line is the tag, also
# written to $CODEYARD_STATE/singleuser-image. Progress and build logs go to stderr.
# Also builds the egress proxy image (build-egress-image.sh, $CODEYARD_STATE/egress-image).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STATE="${CODEYARD_STATE:-${CODEYARD_CACHE:-$HOME/.cache/codeyard}/state}"
DOCKER=/usr/bin/docker
INSTALL_JUPYTER_AI="${INSTALL_JUPYTER_AI:-1}"
log() { echo "[build-images] $*" >&2; }
mkdir -p "$STATE"

"$HERE/ensure-docker.sh" "$STATE" >/dev/null

# --- base image ---------------------------------------------------------------------
BASE="${BASE_IMAGE:-}"
if [ -n "$BASE" ] && ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
    log "Pulling $BASE..."
    "$DOCKER" pull "$BASE" >&2 || { log "Cannot pull $BASE; falling back to the offline base."; BASE=""; }
fi
if [ -z "$BASE" ]; then
    BASE="$("$HERE/build-base.sh" | tail -n 1)"
fi
log "Base image: $BASE"

# --- content hash of every input (file contents, so uncommitted edits count) ---------
CERTS=(/usr/local/share/ca-certificates/*.crt)
[ -e "${CERTS[0]}" ] || CERTS=()
mapfile -t SRC < <(cd "$REPO" && git ls-files -co --exclude-standard -- \
    pyproject.toml README.md server_extension spawner placement labextension | sort |
    while read -r f; do if [ -f "$f" ]; then echo "$f"; fi; done)
if [ ${#SRC[@]} -eq 0 ]; then
    log "ERROR: no sources found with git ls-files in $REPO (needs git and a git checkout)."
    exit 1
fi
# jupyter-ai -> the LLM gateway; installed as /opt/venv/etc/jupyter/jupyter_server_config.py.
JAI_CONFIG="$REPO/hub_config/jupyter_ai/jupyter_server_config.py"
HASH="$( {
    echo "base=$BASE ($("$DOCKER" image inspect -f '{{.Id}}' "$BASE"))"
    echo "INSTALL_JUPYTER_AI=$INSTALL_JUPYTER_AI"
    sha256sum "$HERE"/../singleuser/* "$JAI_CONFIG" "${CERTS[@]}" | sed 's|  .*/|  |'
    (cd "$REPO" && sha256sum "${SRC[@]}")
} | sha256sum | cut -c1-16)"
TAG="codeyard/singleuser:$HASH"

if [ "${FORCE_BUILD:-0}" != 1 ] && "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG is up to date; skipping the build."
else
    CTX="$(mktemp -d "${TMPDIR:-/tmp}/codeyard-image.XXXXXX")"
    trap 'rm -rf "$CTX"' EXIT
    mkdir -p "$CTX/certs" "$CTX/wheels"
    cp "$HERE"/../singleuser/* "$CTX/"
    cp "$JAI_CONFIG" "$CTX/jupyter_server_config.py"
    [ ${#CERTS[@]} -eq 0 ] || cp "${CERTS[@]}" "$CTX/certs/"
    log "Extra CA certificates: ${#CERTS[@]}"
    PY="$REPO/.venv/bin/python"; [ -x "$PY" ] || PY=python3
    "$PY" -m pip --version >/dev/null 2>&1 || { log "ERROR: $PY has no pip (run make venv)."; exit 1; }
    log "Building the workspace wheel..."
    (cd "$REPO" && "$PY" -m pip wheel --quiet --no-deps . -w "$CTX/wheels" >&2)
    log "Building $TAG (docker build, a cold build takes several minutes)..."
    start=$SECONDS
    DOCKER_BUILDKIT=0 "$DOCKER" build -t "$TAG" \
        --build-arg "BASE_IMAGE=$BASE" \
        --build-arg "INSTALL_JUPYTER_AI=$INSTALL_JUPYTER_AI" \
        --label "org.codeyard.inputs-hash=$HASH" \
        "$CTX" >&2
    log "Built $TAG in $((SECONDS - start)) s."
fi

"$DOCKER" tag "$TAG" codeyard/singleuser:latest
# The per-host egress proxy (docs/network.md); its tag goes to $STATE/egress-image, which
# turns the proxy on for a Hub with this state folder.
"$HERE/build-egress-image.sh" >/dev/null
log "Size: $("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%d MB", $1/1e6}')"
echo "$TAG" >"$STATE/singleuser-image"
if [ -n "${CODEYARD_REGISTRY:-}" ] && [ "$CODEYARD_REGISTRY" != none ]; then
    "$HERE/push-image.sh" "$TAG" >&2
fi
echo "$TAG"
