"""The per-chat persona manager that loads jupyter-ai's deferred extensions first.

`defer_jupyter_ai` points `PersonaManagerExtension.persona_manager_class` here. A chat's
personas need Jupyternaut's config manager (set when its extension loads) and the MCP
server, so the deferred extensions are loaded before the first persona manager is built.

The class keeps the name `PersonaManager`: traitlets keys config sections by class name,
and the persona manager extension reads `c.PersonaManager.default_persona_id` under this
class's name, so the site's existing `c.PersonaManager` settings keep applying.
"""

from __future__ import annotations

from typing import Any

from jupyter_ai_persona_manager.persona_manager import PersonaManager as _PersonaManager

from .loader import SETTINGS_KEY

__all__ = ["PersonaManager"]


class PersonaManager(_PersonaManager):  # type: ignore[misc]
    """jupyter-ai's PersonaManager, created after the deferred extensions are loaded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        serverapp = getattr(kwargs.get("parent"), "serverapp", None)
        web_app = getattr(serverapp, "web_app", None)
        loader = web_app.settings.get(SETTINGS_KEY) if web_app is not None else None
        if loader is not None:
            loader.load_now()
        super().__init__(*args, **kwargs)
