#!/usr/bin/env bash
# Install configurable-http-proxy@5 into a project-local folder (no global npm install).
#
# Usage: install-proxy.sh
# Env:   CODEYARD_PROXY_DIR  target folder (default $CODEYARD_CACHE/proxy, $HOME/.cache/codeyard/proxy)
# Output: the last stdout line is the path of the configurable-http-proxy executable.
# Idempotent: does nothing when a 5.x proxy is already there.
set -euo pipefail

DIR="${CODEYARD_PROXY_DIR:-${CODEYARD_CACHE:-$HOME/.cache/codeyard}/proxy}"
BIN="$DIR/node_modules/.bin/configurable-http-proxy"
log() { echo "[install-proxy] $*" >&2; }

if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q '^5\.'; then
    log "configurable-http-proxy $("$BIN" --version) already in $DIR"
    echo "$BIN"
    exit 0
fi
command -v npm >/dev/null 2>&1 || { log "ERROR: npm not found; install Node.js 18+"; exit 1; }
mkdir -p "$DIR"
[ -f "$DIR/package.json" ] || echo '{"name": "codeyard-proxy", "private": true}' >"$DIR/package.json"
log "npm install configurable-http-proxy@5 into $DIR ..."
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "configurable-http-proxy@5" >&2
log "installed $("$BIN" --version)"
echo "$BIN"
