#!/usr/bin/env bash
# Run a command with one vLLM started for it, e.g. both test suites sharing one model server:
#
#   hub_config/vllm/with-vllm.sh make test-ext test-gateway
#
# Starts serve.sh on a free 127.0.0.1 port with a throw-away key, waits for /health, exports
# CODEYARD_TEST_VLLM_URL and CODEYARD_TEST_VLLM_KEY_FILE (the test fixtures reuse it instead
# of starting their own), runs the command, stops vLLM, and exits with the command's status.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

CODEYARD_VLLM_PORT="$port" CODEYARD_VLLM_KEY_FILE="$work/vllm.key" \
    CODEYARD_VLLM_LOG="$work/vllm.log" setsid "$HERE/serve.sh" &
pid=$!
cleanup() {
    kill -TERM -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break
    kill -0 "$pid" 2>/dev/null || { echo "vLLM failed to start" >&2; exit 1; }
    sleep 0.5
done
curl -sf -o /dev/null "http://127.0.0.1:$port/health" || { echo "vLLM not ready in 300 s" >&2; exit 1; }

export CODEYARD_TEST_VLLM_URL="http://127.0.0.1:$port" CODEYARD_TEST_VLLM_KEY_FILE="$work/vllm.key"
status=0
"$@" || status=$?
exit "$status"
