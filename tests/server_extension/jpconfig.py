"""The jupyter-server config every suite here starts from, plus per-module sections."""

from __future__ import annotations

from typing import Any


def server_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """Codeyard on, terminals off, no unauthenticated access; `sections` add app configs.

    Terminals are off: they ship an undecorated websocket handler that would trip the
    auth-warning check in conftest, and workspaces here don't test them.
    """
    return {
        "ServerApp": {
            "jpserver_extensions": {
                "codeyard.server_extension": True,
                "jupyter_server_terminals": False,
            },
            "terminals_enabled": False,
            "allow_unauthenticated_access": False,
        },
        **sections,
    }
