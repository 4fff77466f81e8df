"""Codeyard's Hub settings.

`CodeyardHub` holds the few choices an admin makes (admin user, approval, database,
addresses, limits, culling, placement, the shared model). Each can be set in the site config
file as `c.CodeyardHub.<name> = ...`, or through the `CODEYARD_*` environment variable named
in its help. `jupyterhub_config.py` turns them into JupyterHub, authenticator and spawner
config, but only where the site config did not already set that value.

The settings are grouped by topic in core_settings.py, workspace_settings.py,
placement_settings.py, model_settings.py and audit_settings.py. Those groups are plain
HasTraits, so an admin configures one section, `CodeyardHub`, whatever file a setting is
defined in.

This is the site configurer: state paths, ports and URLs are computed here once, from the
site config and the `CODEYARD_*` variables, and jupyterhub_config.py passes them down
explicitly to the Hub, its services (the LLM gateway, the placement service) and the
workspaces.
"""

from __future__ import annotations

from audit_settings import AuditSettings
from model_settings import ModelSettings
from placement_settings import PlacementSettings
from traitlets.config import Configurable
from workspace_settings import WorkspaceSettings


class CodeyardHub(WorkspaceSettings, PlacementSettings, ModelSettings, AuditSettings, Configurable):
    """Site settings for a Codeyard Hub."""
