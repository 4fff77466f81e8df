#!/usr/bin/env bash
# Serve the shared model with vLLM on loopback, behind an API key only the gateway knows.
#
# Runs setup.sh first (a no-op when cached), checks the model folder and free memory, starts
# vLLM, prints progress until /health answers, then stays in the foreground until stopped.
# If vLLM exits during start-up, the last log lines and the likely cause are printed.
#
# Settings (environment):
#   CODEYARD_VLLM_PORT          port on 127.0.0.1 (default 8003, as CodeyardHub.vllm_port;
#                               never 8001, the proxy's API port)
#   CODEYARD_VLLM_KEY_FILE      file holding the API key; created (mode 0600) when missing
#                               (default $CODEYARD_STATE/vllm.key). The gateway reads it.
#   CODEYARD_MODEL_DIR          Hugging Face model folder (default: the converted SmolLM2)
#   CODEYARD_SERVED_MODEL_NAME  model id clients use (default smollm2)
#   CODEYARD_VLLM_MAX_MODEL_LEN context length (default 4096)
#   CODEYARD_VLLM_KV_CACHE      KV cache size on CPU (default 256M)
#   CODEYARD_VLLM_DTYPE         weights' type on CPU (default: bfloat16 where the CPU has
#                               bfloat16 arithmetic, avx512_bf16 or amx_bf16; else float32)
#   CODEYARD_VLLM_MIN_MEM_MB    refuse to start with less available memory (default 2500 on CPU)
#   CODEYARD_VLLM_TOOL_PARSER   tool-call parser (default hermes; empty turns tool calls off).
#                               jupyter-ai's Jupyternaut sends tools with tool_choice=auto,
#                               which vLLM refuses unless auto tool choice is on.
#   CODEYARD_VLLM_EXTRA_ARGS    more `vllm serve` flags, split on spaces
#   CODEYARD_VLLM_LOG           log file (default $CODEYARD_STATE/vllm-<port>.log)
#   CODEYARD_VLLM_URL           external vLLM: this script does nothing and says so
#   CODEYARD_VLLM_FLAVOR        see setup.sh
#   CODEYARD_CACHE, CODEYARD_STATE  as everywhere: ~/.cache/codeyard and its state/ folder
#
# Flags:
#   --print-command  print the `vllm serve` command line and exit (the GPU path is tested this way)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${CODEYARD_CACHE:-$HOME/.cache/codeyard}"
STATE="${CODEYARD_STATE:-$CACHE/state}"
PORT="${CODEYARD_VLLM_PORT:-8003}"
KEY_FILE="${CODEYARD_VLLM_KEY_FILE:-$STATE/vllm.key}"
NAME="${CODEYARD_SERVED_MODEL_NAME:-smollm2}"
MAX_LEN="${CODEYARD_VLLM_MAX_MODEL_LEN:-4096}"
KV_CACHE="${CODEYARD_VLLM_KV_CACHE:-256M}"
LOG="${CODEYARD_VLLM_LOG:-$STATE/vllm-$PORT.log}"
PRINT_ONLY=0
[[ "${1:-}" == "--print-command" ]] && PRINT_ONLY=1

say() { printf '[codeyard-vllm] %s\n' "$*" >&2; }
die() { printf '[codeyard-vllm] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ -n "${CODEYARD_VLLM_URL:-}" ]]; then
    say "CODEYARD_VLLM_URL=${CODEYARD_VLLM_URL}: an external vLLM is used, nothing to start"
    exit 0
fi

if [[ "$PRINT_ONLY" == 1 ]]; then
    eval "$("$HERE/setup.sh" --print-plan | sed -n 's/^\(flavor\|venv\|model_dir\)=\(.*\)$/\1=\2/p' |
        sed "s/=\(.*\)/='\1'/")"
    VLLM_BIN="$venv/bin/vllm"
    VLLM_FLAVOR="$flavor"
    MODEL_DIR="$model_dir"
else
    "$HERE/setup.sh"
    # shellcheck disable=SC1091
    source "$CACHE/vllm.env"
fi

CMD=("$VLLM_BIN" serve "$MODEL_DIR" --host 127.0.0.1 --port "$PORT" --served-model-name "$NAME"
    --max-model-len "$MAX_LEN" --disable-uvicorn-access-log)
if [[ "$VLLM_FLAVOR" == cpu ]]; then
    # Eager mode: torch.compile costs ~30 s of start-up on CPU for little gain.
    # bfloat16 only where the CPU computes it: on an AVX2-only CPU (AMD EPYC, 2 cores) torch
    # emulates it, and SmolLM2-135M's time to first token was 1.05 s alone and 16.5 s at 16
    # streams, against 0.34 s and 2.5 s in float32.
    DTYPE="${CODEYARD_VLLM_DTYPE:-}"
    if [[ -z "$DTYPE" ]]; then
        DTYPE=float32
        grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && DTYPE=bfloat16
    fi
    CMD+=(--dtype "$DTYPE" --enforce-eager --kv-cache-memory-bytes "$KV_CACHE")
fi
TOOL_PARSER="${CODEYARD_VLLM_TOOL_PARSER-hermes}"
[[ -n "$TOOL_PARSER" ]] && CMD+=(--enable-auto-tool-choice --tool-call-parser "$TOOL_PARSER")
# shellcheck disable=SC2206
[[ -n "${CODEYARD_VLLM_EXTRA_ARGS:-}" ]] && CMD+=(${CODEYARD_VLLM_EXTRA_ARGS})

if [[ "$PRINT_ONLY" == 1 ]]; then
    echo "${CMD[*]}"
    exit 0
fi

# Checks that turn vLLM's long tracebacks into one clear sentence.
[[ -f "$MODEL_DIR/config.json" ]] ||
    die "model folder $MODEL_DIR has no config.json: not a Hugging Face model folder (set CODEYARD_MODEL_DIR)"
compgen -G "$MODEL_DIR/*.safetensors" >/dev/null || compgen -G "$MODEL_DIR/*.bin" >/dev/null ||
    die "model folder $MODEL_DIR has no weights (*.safetensors or *.bin)"
[[ -f "$MODEL_DIR/tokenizer.json" || -f "$MODEL_DIR/tokenizer_config.json" ]] ||
    die "model folder $MODEL_DIR has no tokenizer"
if [[ "$VLLM_FLAVOR" == cpu ]]; then
    need_mb="${CODEYARD_VLLM_MIN_MEM_MB:-2500}"
    avail_mb=$(($(awk '/^MemAvailable:/ {print $2}' /proc/meminfo) / 1024))
    ((avail_mb >= need_mb)) ||
        die "not enough memory: ${avail_mb} MB available, vLLM on CPU needs about ${need_mb} MB (CODEYARD_VLLM_MIN_MEM_MB)"
fi

if [[ ! -s "$KEY_FILE" ]]; then
    mkdir -p "$(dirname "$KEY_FILE")"
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$KEY_FILE")
fi
mkdir -p "$(dirname "$LOG")"

# The key goes through the environment, not argv, so `ps` does not show it.
export VLLM_API_KEY
VLLM_API_KEY="$(cat "$KEY_FILE")"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1

say "starting vLLM ($VLLM_FLAVOR) for $MODEL_DIR as '$NAME' on 127.0.0.1:$PORT, log: $LOG"
started=$SECONDS
"${CMD[@]}" >"$LOG" 2>&1 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exit 143' TERM INT

explain_failure() {
    say "vLLM exited during start-up (status $1). Last lines of $LOG:"
    tail -n 25 "$LOG" >&2 || true
    if grep -qiE 'out of memory|OutOfMemory|Cannot allocate memory|insufficient memory|MemoryError|Killed' "$LOG"; then
        die "vLLM ran out of memory: lower CODEYARD_VLLM_KV_CACHE or CODEYARD_VLLM_MAX_MODEL_LEN, or free memory"
    elif grep -qiE 'address already in use' "$LOG"; then
        die "port $PORT is already in use (CODEYARD_VLLM_PORT)"
    elif grep -qiE 'Failed to infer device type' "$LOG"; then
        die "the GPU build of vLLM found no GPU: set CODEYARD_VLLM_FLAVOR=cpu"
    elif grep -qiE 'config.json|safetensors|Unrecognized model|not a valid model|does not appear to have' "$LOG"; then
        die "vLLM could not load the model folder $MODEL_DIR"
    fi
    die "vLLM failed to start; see $LOG"
}

last=""
while ! curl -sf -o /dev/null "http://127.0.0.1:$PORT/health"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        status=0
        wait "$pid" || status=$?
        explain_failure "$status"
    fi
    # One progress line per new stage, read from vLLM's own log.
    stage=""
    while IFS='|' read -r pattern label; do
        grep -q "$pattern" "$LOG" 2>/dev/null && stage="$label"
    done <<'STAGES'
non-default args|loading vLLM
Initializing a V1 LLM engine|starting the engine process
Starting to load model|loading the model weights
Loading weights took|weights loaded, sizing the KV cache
KV cache size|KV cache ready, warming up
Starting vLLM server|starting the HTTP server
STAGES
    if [[ -n "$stage" && "$stage" != "$last" ]]; then
        say "$((SECONDS - started)) s: $stage"
        last="$stage"
    fi
    sleep 0.5
done
say "vLLM ready on http://127.0.0.1:$PORT after $((SECONDS - started)) s"
wait "$pid"
