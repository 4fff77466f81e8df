#!/usr/bin/env bash
# up.sh hook: start the shared model, vLLM (hub_config/vllm/serve.sh), for `make up`.
#
# CODEYARD_VLLM_URL set (an external vLLM): nothing is started; the gateway forwards there.
# Otherwise the model is prepared in the foreground (setup.sh: a no-op once cached, so the
# tokenizer exists before the Hub mounts it into workspaces), then serve.sh runs in the
# background on 127.0.0.1:$CODEYARD_VLLM_PORT (default 8003, as CodeyardHub.vllm_port) with
# the key in $CODEYARD_STATE/vllm.key. Its progress goes to this terminal, vLLM's log to
# $CODEYARD_STATE/vllm.log. Prints "pid <PID>" so up.sh stops it on exit (serve.sh stops
# vLLM on SIGTERM). A vLLM already answering there with our key is reused.
# This hook runs before the Hub and does not read the site config: choose vLLM's port and
# key file with CODEYARD_VLLM_PORT / CODEYARD_VLLM_KEY_FILE, which both sides read.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
VLLM="$HERE/../vllm"
say() { echo "[up] $*" >&2; }

if [ -n "${CODEYARD_VLLM_URL:-}" ]; then
    say "external vLLM at $CODEYARD_VLLM_URL (CODEYARD_VLLM_URL): not starting one"
    exit 0
fi
export CODEYARD_VLLM_PORT="${CODEYARD_VLLM_PORT:-8003}"
export CODEYARD_VLLM_KEY_FILE="${CODEYARD_VLLM_KEY_FILE:-$CODEYARD_STATE/vllm.key}"
export CODEYARD_VLLM_LOG="${CODEYARD_VLLM_LOG:-$CODEYARD_STATE/vllm.log}"
url="http://127.0.0.1:$CODEYARD_VLLM_PORT"

if curl -sf -o /dev/null "$url/health"; then
    if [ -s "$CODEYARD_VLLM_KEY_FILE" ] && curl -sf -o /dev/null \
        -H "Authorization: Bearer $(cat "$CODEYARD_VLLM_KEY_FILE")" "$url/v1/models"; then
        say "vLLM already runs on $url: reusing it"
        exit 0
    fi
    say "ERROR: something else answers on $url; set CODEYARD_VLLM_PORT or CODEYARD_VLLM_URL"
    exit 1
fi

say "preparing the model (vLLM venv and model folder; cached after the first run)..."
"$VLLM/setup.sh" >&2
say "starting vLLM on $url in the background (log: $CODEYARD_VLLM_LOG)"
"$VLLM/serve.sh" >&2 </dev/null &
echo "pid $!"
