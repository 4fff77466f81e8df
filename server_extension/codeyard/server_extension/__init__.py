"""Codeyard's Jupyter server extension: the workspace API (tree, files, patches, audit)."""

from typing import Any

from .app import CodeyardApp

__all__ = ["CodeyardApp", "_jupyter_labextension_paths", "_jupyter_server_extension_points"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Let jupyter_server discover the extension app through the package name."""
    return [{"module": "codeyard.server_extension.app", "app": CodeyardApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt bundle sits, for `jupyter labextension develop`."""
    return [{"src": "labextension", "dest": "codeyard-labextension"}]
