"""The shared model: the LLM gateway's port, the model name workspaces ask for, the vLLM the
gateway forwards to and its key, and the tokenizer workspaces count with
(docs/hub.md, docs/gateway.md, hub_config/vllm/README.md).

Part of `CodeyardHub` (hub_settings.py). These are the only Python readers of the vLLM and
gateway variables (CODEYARD_VLLM_URL, CODEYARD_VLLM_PORT, ...): jupyterhub_config.py hands
the computed values to the gateway as its settings, and to workspaces as
CODEYARD_LLM_MODEL / CODEYARD_TOKENIZER_FILE; CODEYARD_LLM_URL is built per host by the
spawner from `llm_url_template` (`PlacementSpawner.hub_service_urls`).
"""

from __future__ import annotations

import os

from core_settings import CoreSettings, env
from traitlets import Integer, Unicode, default

# 8001 is the proxy's API port (CoreSettings.proxy_api_port), so vLLM takes 8003.
DEFAULT_VLLM_PORT = 8003


class ModelSettings(CoreSettings):
    """The gateway's and vLLM's settings; configured as `c.CodeyardHub.*`."""

    llm_port = Integer(
        help="""Port of the LLM gateway (the managed service `codeyard-llm`) on `hub_ip`,
        where workspace containers reach it. Env: CODEYARD_LLM_PORT. Default 8002.""",
    ).tag(config=True)

    @default("llm_port")
    def _default_llm_port(self) -> int:
        return int(env("CODEYARD_LLM_PORT", "8002"))

    @property
    def llm_url_template(self) -> str:
        """The gateway's URL for workspaces (CODEYARD_LLM_URL), `{hub}` standing for the
        address each host's containers reach the Hub at (`PlacementSpawner.hub_service_urls`)."""
        return f"http://{{hub}}:{self.llm_port}"

    llm_model = Unicode(
        help="""Model name workspaces ask the gateway for (vLLM's served model name).
        Env: CODEYARD_SERVED_MODEL_NAME. Default smollm2.""",
    ).tag(config=True)

    @default("llm_model")
    def _default_llm_model(self) -> str:
        return env("CODEYARD_SERVED_MODEL_NAME", "smollm2")

    vllm_url = Unicode(
        help="""An already-running (external) vLLM the gateway forwards to. Set, nothing is
        started; empty, `make up` starts vLLM on 127.0.0.1:`vllm_port` (hub_config/up.d).
        Env: CODEYARD_VLLM_URL.""",
    ).tag(config=True)

    @default("vllm_url")
    def _default_vllm_url(self) -> str:
        return os.environ.get("CODEYARD_VLLM_URL", "")

    vllm_port = Integer(
        help="""Loopback port of the vLLM `make up` starts. Env: CODEYARD_VLLM_PORT.
        Default 8003, not 8001, which is the proxy's API (`proxy_api_port`). The shell
        scripts that start vLLM (hub_config/up.d/10-vllm.sh, hub_config/vllm/serve.sh)
        default to the same port; they read CODEYARD_VLLM_PORT, not the site config.""",
    ).tag(config=True)

    @default("vllm_port")
    def _default_vllm_port(self) -> int:
        return int(env("CODEYARD_VLLM_PORT", str(DEFAULT_VLLM_PORT)))

    @property
    def vllm_upstream_url(self) -> str:
        """What the gateway forwards to: `vllm_url`, else the vLLM `make up` starts."""
        return self.vllm_url or f"http://127.0.0.1:{self.vllm_port}"

    vllm_key_file = Unicode(
        help="""File with vLLM's API key, read only by the gateway. Env:
        CODEYARD_VLLM_KEY_FILE. Default <state_dir>/vllm.key (serve.sh makes it, 0600).""",
    ).tag(config=True)

    @default("vllm_key_file")
    def _default_vllm_key_file(self) -> str:
        return env("CODEYARD_VLLM_KEY_FILE", os.path.join(self.state_dir, "vllm.key"))

    tokenizer_file = Unicode(
        help="""The served model's tokenizer.json on this machine, mounted read-only into
        workspaces so explain/rewrite count their context budget exactly (missing: they
        estimate). Env: CODEYARD_TOKENIZER_FILE. Default: tokenizer.json in
        CODEYARD_MODEL_DIR, else in `<cache_dir>/models/smollm2`.""",
    ).tag(config=True)

    @default("tokenizer_file")
    def _default_tokenizer_file(self) -> str:
        model_dir = env("CODEYARD_MODEL_DIR", os.path.join(self.cache_dir, "models", "smollm2"))
        return env("CODEYARD_TOKENIZER_FILE", os.path.join(model_dir, "tokenizer.json"))

    @property
    def llm_audit_log(self) -> str:
        """The gateway's audit trail (digests and counts, never text)."""
        return self.state_path("llm-audit.jsonl")
