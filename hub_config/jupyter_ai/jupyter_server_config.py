"""Point jupyter-ai's Jupyternaut at the shared model, through the Codeyard LLM gateway.

Install in the single-user image as /opt/venv/etc/jupyter/jupyter_server_config.py (next to
the image's jupyter_server_config.json; Jupyter loads both). It reads, at server start:

    CODEYARD_LLM_URL       the gateway base URL without /v1 (the spawner sets it)
    CODEYARD_LLM_MODEL     served model name (default smollm2)
    JUPYTERHUB_API_TOKEN   this server's own token (JupyterHub sets it); the gateway accepts
                           it because the token holds custom:codeyard-llm

jupyter-ai's heavy server extensions (Jupyternaut, litellm, the MCP server, the ACP client)
load on the first chat or Jupyternaut request, not at start (`codeyard.jupyter_ai_on_demand`;
docs/performance.md has the figures). A server without Codeyard's wheel (a plain jupyter-ai
venv) loads them at start as jupyter-ai ships.

The token is handed to litellm through HOSTED_VLLM_API_KEY rather than `model_parameters`,
so it is not written to jupyter-ai's config.json nor returned by its config API. The user's
own token is used, never a shared secret.
"""

import os

c = get_config()  # provided by traitlets when it loads this file

# litellm fetches a model price list from the internet at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# jupyter-ai 3.2 ships a default persona id that does not exist; without this the chat
# needs a click before Jupyternaut answers.
c.PersonaManager.default_persona_id = (
    "jupyter-ai-personas::jupyter_ai_jupyternaut::JupyternautPersona"
)

try:
    from codeyard.jupyter_ai_on_demand import defer_jupyter_ai
except ImportError:  # jupyter-ai without Codeyard: everything loads at start.
    pass
else:
    defer_jupyter_ai(c)

_url = os.environ.get("CODEYARD_LLM_URL", "").rstrip("/")
if _url:
    _model = "hosted_vllm/" + os.environ.get("CODEYARD_LLM_MODEL", "smollm2")
    os.environ.setdefault("HOSTED_VLLM_API_BASE", f"{_url}/v1")
    if os.environ.get("JUPYTERHUB_API_TOKEN"):
        os.environ.setdefault("HOSTED_VLLM_API_KEY", os.environ["JUPYTERHUB_API_TOKEN"])
    c.JupyternautExtension.initial_language_model = _model
    c.JupyternautExtension.model_parameters = {_model: {"api_base": f"{_url}/v1"}}
