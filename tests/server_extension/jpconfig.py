"""The jupyter-server config every suite here starts from, plus per-module sections."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

_HELD: list[socket.socket] = []

#: The converted model's tokenizer, where hub_config/vllm/setup.sh (run for the model_stack
#: fixture) puts it: under $CODEYARD_CACHE, as the script reads it.
TOKENIZER = (
    Path(os.environ.get("CODEYARD_CACHE", Path.home() / ".cache" / "codeyard"))
    / "models"
    / "smollm2"
    / "tokenizer.json"
)


def model_llm(model_stack: dict[str, str], **settings: Any) -> dict[str, Any]:
    """The `CodeyardLLM` section for the test model: the gateway's URL and token from the
    model_stack fixture, the model's tokenizer, and a module's own `settings`."""
    return {
        "url": model_stack["url"],
        "token": model_stack["token"],
        "tokenizer_file": str(TOKENIZER),
        **settings,
    }


def closed_port() -> int:
    """A loopback port that refuses connections for as long as this test process runs.

    The socket stays bound but never listens: a port that is merely released could be
    taken by another server (a parallel suite's) before the test connects to it.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    port: int = sock.getsockname()[1]
    return port


def server_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """Codeyard on, terminals off, no unauthenticated access; `sections` add app configs.

    Terminals are off: they ship an undecorated websocket handler that would trip the
    auth-warning check in conftest, and workspaces here don't test them.

    The external-change watcher is off unless a `CodeyardApp` section turns it on: its
    records arrive on their own schedule (after a debounce) and would land between the
    exact record sequences other modules assert on. test_change_records.py turns it on.
    """
    codeyard = {"external_changes": False, **sections.pop("CodeyardApp", {})}
    return {
        "ServerApp": {
            "jpserver_extensions": {
                "codeyard.server_extension": True,
                "jupyter_server_terminals": False,
            },
            "terminals_enabled": False,
            "allow_unauthenticated_access": False,
        },
        "CodeyardApp": codeyard,
        **sections,
    }
