"""Load jupyter-ai's heavy server extensions on first use instead of at server start.

jupyter-ai 3 ships eleven server extensions. Four of them import litellm, langchain and an
MCP server at start (about 200 MiB and 5 CPU-seconds per workspace, see
docs/performance.md), although most workspaces never open a chat. This extension keeps
those four off at start and loads them into the running server, through jupyter_server's
own ExtensionManager, the first time they are needed:

- a request to one of their routes (the Jupyternaut settings, the model list, ACP
  permissions): a placeholder route loads them and answers 307 to the same URL, which the
  real handler then serves;
- a chat being opened: the persona manager creates its per-chat `PersonaManager` through
  `codeyard.jupyter_ai_on_demand.persona_manager.PersonaManager`, which loads them first,
  so Jupyternaut and the MCP tools are there before the first persona is created.

The cheap jupyter-ai extensions (router, persona manager, chat, chat commands, tools, live
content, commands toolkit) stay loaded at start: the lab's chat panel and its page-load
checks need them. JupyterLab's presence probe of Jupyternaut (`GET
api/jupyternaut/get-example` on every page load) is answered without loading anything.

`defer_jupyter_ai(c)` is the whole configuration; the image's jupyter_server_config.py
calls it. This module imports nothing from jupyter-ai, so a config file may import it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = [
    "DEFERRED_EXTENSIONS",
    "EXTENSION_NAME",
    "PERSONA_MANAGER_CLASS",
    "PRESENCE_PROBES",
    "defer_jupyter_ai",
]

EXTENSION_NAME = "codeyard.jupyter_ai_on_demand"

# Server extension -> URL patterns (below base_url) that only it serves. A request to any of
# them loads every deferred extension: Jupyternaut needs litellm and the MCP tools anyway.
DEFERRED_EXTENSIONS: dict[str, list[str]] = {
    "jupyter_ai_acp_client": [r"ai/acp/.*"],
    "jupyter_ai_jupyternaut": [r"api/jupyternaut/.*"],
    "jupyter_ai_litellm": [r"jupyter-ai-litellm/.*", r"api/ai/models/chat.*"],
    "jupyter_server_mcp": [],
}

# Routes JupyterLab's frontend calls on every page load only to check that a server extension
# is installed (it logs "appears to be missing" otherwise): answered without loading it.
PRESENCE_PROBES: dict[str, str] = {
    r"api/jupyternaut/get-example/?": "jupyter_ai_jupyternaut",
}

PERSONA_MANAGER_CLASS = f"{EXTENSION_NAME}.persona_manager.PersonaManager"


def defer_jupyter_ai(c: Any) -> bool:
    """Configure a server (`c`, a traitlets Config) to load jupyter-ai's heavy extensions on
    first use. Returns False, and changes nothing, when jupyter-ai's persona manager is not
    installed (an image built with INSTALL_JUPYTER_AI=0)."""
    if importlib.util.find_spec("jupyter_ai_persona_manager") is None:
        return False
    c.ServerApp.jpserver_extensions.update(
        {EXTENSION_NAME: True, **dict.fromkeys(DEFERRED_EXTENSIONS, False)}
    )
    c.PersonaManagerExtension.persona_manager_class = PERSONA_MANAGER_CLASS
    return True


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Let jupyter_server discover the loader through the package name."""
    return [{"module": EXTENSION_NAME}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Install the placeholder routes for every deferred extension that is installed and off."""
    from .loader import OnDemandLoader

    OnDemandLoader.install(serverapp)
