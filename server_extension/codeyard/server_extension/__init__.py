"""Codeyard's Jupyter server extension: the workspace API (tree, files, patches, audit).

`CodeyardApp` is imported on first use, not with the package: Hub-side processes (the LLM
gateway, the Hub's start/stop recorder) use the audit log and its forwarder
(`audit`, `audit_forward`) without loading jupyter_server, which would add seconds to their
start on a loaded machine.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import CodeyardApp

__all__ = ["CodeyardApp", "_jupyter_labextension_paths", "_jupyter_server_extension_points"]


def __getattr__(name: str) -> Any:
    if name == "CodeyardApp":
        from .app import CodeyardApp

        return CodeyardApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Let jupyter_server discover the extension app through the package name."""
    from .app import CodeyardApp

    return [{"module": "codeyard.server_extension.app", "app": CodeyardApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt bundle sits, for `jupyter labextension develop`."""
    return [{"src": "labextension", "dest": "codeyard-labextension"}]
