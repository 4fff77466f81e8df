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

# serve.sh and everything vLLM forks (its engine process) run in a session of their own,
# whose id the session leader writes down: `setsid` forks when it is started as a process
# group leader (a shell with job control), and then $! is not that session.
CODEYARD_VLLM_PORT="$port" CODEYARD_VLLM_KEY_FILE="$work/vllm.key" \
    CODEYARD_VLLM_LOG="$work/vllm.log" \
    setsid bash -c 'echo $$ >"$1"; exec "$2"' with-vllm "$work/vllm.sid" "$HERE/serve.sh" &
pid=$!
for _ in $(seq 1 100); do [ -s "$work/vllm.sid" ] && break; sleep 0.05; done
cleanup() {
    local sid
    sid="$(cat "$work/vllm.sid" 2>/dev/null || echo "$pid")"
    kill -TERM -- "-$sid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # vLLM's engine process may outlive the API server it belongs to; nothing of this run's
    # vLLM may outlive the command (it holds GBs and both cores): wait for the whole session,
    # then kill what is left of it.
    for _ in $(seq 1 60); do
        kill -0 -- "-$sid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL -- "-$sid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Whether serve.sh's session still has a process (serve.sh itself may be a forked child).
serving() {
    kill -0 -- "-$(cat "$work/vllm.sid" 2>/dev/null || echo "$pid")" 2>/dev/null
}

for _ in $(seq 1 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break
    serving || { echo "vLLM failed to start" >&2; exit 1; }
    sleep 0.5
done
curl -sf -o /dev/null "http://127.0.0.1:$port/health" || { echo "vLLM not ready in 300 s" >&2; exit 1; }

export CODEYARD_TEST_VLLM_URL="http://127.0.0.1:$port" CODEYARD_TEST_VLLM_KEY_FILE="$work/vllm.key"
status=0
"$@" || status=$?
exit "$status"
