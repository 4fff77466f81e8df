"""What an admin configures on `PlacementSpawner`, and what a user may ask for.

`SpawnerSettings` is `PlacementSpawner`'s base: its traitlets (set as
`c.PlacementSpawner.<name>`, which traitlets applies along the class hierarchy), the
DockerSpawner defaults that fit workspaces, and the options: size profiles, the image
allow-list, and the spawn form. The lifecycle is in `spawner.py`.
"""

from __future__ import annotations

import html
from typing import Any

from dockerspawner import DockerSpawner
from jupyterhub.traitlets import EntryPointType
from tornado import web
from traitlets import Bool, Dict, Float, Integer, Set, Unicode, default, validate

from codeyard.placement.hosts import HostProvider, LocalHostProvider

from .profiles import InvalidOptions, SizeProfile, WorkspaceOptions

DEFAULT_PROFILES = {
    "small": {"display_name": "Small (1 CPU, 2 GB)", "cpu": 1, "mem": "2G"},
    "medium": {"display_name": "Medium (2 CPU, 4 GB)", "cpu": 2, "mem": "4G"},
    "large": {"display_name": "Large (4 CPU, 8 GB)", "cpu": 4, "mem": "8G"},
}


class SpawnerSettings(DockerSpawner):
    """`PlacementSpawner`'s configuration and options; see the module docstring."""

    # ---- configuration -------------------------------------------------------------

    host_provider_class = EntryPointType(
        default_value=LocalHostProvider,
        klass=HostProvider,
        entry_point_group="codeyard.host_providers",
        help="""Class that chooses a Docker host for new workspaces and finds saved ones.

        A `codeyard.placement.hosts.HostProvider` subclass, given as a class, an import
        string, or the name of an entry point in the `codeyard.host_providers` group.
        One instance is shared by all spawners of the Hub.
        """,
    ).tag(config=True)

    docker_workers_per_host = Integer(
        16,
        help="""Threads issuing blocking Docker API calls, per Docker host.

        Bounds concurrent Docker calls to one engine (including a clone waiting to
        finish), so it also bounds concurrent first-start clones per host.
        """,
    ).tag(config=True)

    @validate("docker_workers_per_host")
    def _check_workers(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 1:
            raise ValueError("docker_workers_per_host must be at least 1")
        return int(proposal["value"])

    profiles = Dict(
        help="""Size profiles users pick from: name -> {"display_name", "cpu", "mem"}.

        `cpu` is a number of cores (a CFS quota), `mem` a hard memory limit such as
        "2G". The container is created with exactly these limits.
        """,
    ).tag(config=True)

    @default("profiles")
    def _default_profiles(self) -> dict[str, Any]:
        return dict(DEFAULT_PROFILES)

    @validate("profiles")
    def _check_profiles(self, proposal: dict[str, Any]) -> dict[str, Any]:
        value = proposal["value"]
        if not value:
            raise ValueError("At least one size profile is needed")
        for name, spec in value.items():
            SizeProfile.from_config(name, spec)
        return value

    default_profile = Unicode(
        help="""Profile used when none is asked for. Defaults to the first profile.""",
    ).tag(config=True)

    @default("default_profile")
    def _default_default_profile(self) -> str:
        return next(iter(self.profiles))

    git_schemes = Set(
        {"https", "http", "git", "ssh"},
        help="""URL schemes users may clone from. `file` is never a good idea here.""",
    ).tag(config=True)

    home_mount = Unicode(
        "/home/jovyan/work",
        help="""Path in the container where the workspace home is mounted.""",
    ).tag(config=True)

    home_uid = Integer(
        1000,
        help="""Owner (uid and gid) of new homes: the image's non-root user.""",
    ).tag(config=True)

    delete_data_on_remove = Bool(
        False,
        help="""Whether deleting a workspace also deletes its home folder.

        Off by default: the container is removed, the files are kept under
        `<storage_root>/<user>/<workspace>` for an admin to archive or restore.
        """,
    ).tag(config=True)

    extra_volumes = Dict(
        help="""More binds for every workspace container, as host path ->
        {"bind": container path, "mode": "ro" or "rw"}; e.g. the model's tokenizer.json,
        read-only. Added only on hosts that share the Hub's file system
        (`storage_is_local`), where the host path exists. The home is always mounted.""",
    ).tag(config=True)

    clone_timeout = Float(
        600,
        help="""Seconds a first-start git clone may take before the spawn fails.""",
    ).tag(config=True)

    # DockerSpawner defaults that fit workspaces.

    @default("prefix")
    def _default_prefix(self) -> str:
        return "codeyard"

    @default("notebook_dir")
    def _default_notebook_dir(self) -> str:
        return self.home_mount

    @default("extra_create_kwargs")
    def _default_extra_create_kwargs(self) -> dict[str, Any]:
        # Rendered by DockerSpawner's templates at create time.
        return {
            "labels": {
                "codeyard.user": "{raw_username}",
                "codeyard.workspace": "{servername}",
            }
        }

    @default("extra_host_config")
    def _default_extra_host_config(self) -> dict[str, Any]:
        # Docker turns IPv6 off in containers when the engine has none, which removes ::1
        # from `lo` while /etc/hosts still maps localhost to it. Servers binding
        # "localhost" (jupyter-ai's MCP server) then die at start-up. Give loopback back.
        return {"sysctls": {"net.ipv6.conf.lo.disable_ipv6": "0"}}

    ready_poll_interval = Float(
        0.2,
        help="""Seconds between checks that the new server answers or its container died.

        The spawner waits for the server itself (instead of leaving it to the Hub's HTTP
        wait) so a container that exits during start-up fails the spawn at once, with
        the container's last log lines, rather than after `http_timeout`.
        """,
    ).tag(config=True)

    @validate("allowed_images")
    def _validate_allowed_images(self, proposal: dict[str, Any]) -> Any:
        value = super()._validate_allowed_images(proposal)
        if value == "*":
            raise ValueError("PlacementSpawner only runs images from an explicit allow-list")
        return value

    # ---- options -------------------------------------------------------------------

    @property
    def size_profiles(self) -> dict[str, SizeProfile]:
        return {n: SizeProfile.from_config(n, s) for n, s in self.profiles.items()}

    def image_choices(self) -> dict[str, str]:
        """The admin allow-list as display key -> image; the configured image if empty."""
        allowed = self._get_allowed_images()
        return dict(allowed) if allowed else {self.image: self.image}

    def parse_options(self, user_options: dict[str, Any]) -> WorkspaceOptions:
        images = self.image_choices()
        return WorkspaceOptions.parse(
            user_options,
            profiles=self.size_profiles,
            default_profile=self.default_profile,
            images=images,
            default_image=next(iter(images)),
            git_schemes=set(self.git_schemes),
        )

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        return _check_user_options

    @default("options_form")
    def _default_options_form(self) -> Any:
        return self._render_options_form

    def _render_options_form(self, spawner: SpawnerSettings) -> str:
        esc = html.escape
        profiles = "".join(
            f'<option value="{esc(p.name)}"{" selected" if p.name == self.default_profile else ""}>'
            f"{esc(p.display_name)}</option>"
            for p in self.size_profiles.values()
        )
        images = "".join(
            f'<option value="{esc(key)}">{esc(key)}</option>' for key in self.image_choices()
        )
        return f"""
<div class="form-group mb-3">
  <label for="cy-repo" class="form-label">
    Git repository (leave empty for an empty workspace)</label>
  <input id="cy-repo" class="form-control" name="repo_url" type="text"
         placeholder="https://git.example.com/team/project.git">
</div>
<div class="form-group mb-3">
  <label for="cy-branch" class="form-label">Branch (optional)</label>
  <input id="cy-branch" class="form-control" name="branch" type="text" placeholder="main">
</div>
<div class="form-group mb-3">
  <label for="cy-profile" class="form-label">Size</label>
  <select id="cy-profile" class="form-select form-control" name="profile">{profiles}</select>
</div>
<div class="form-group mb-3">
  <label for="cy-image" class="form-label">Environment</label>
  <select id="cy-image" class="form-select form-control" name="image">{images}</select>
</div>
"""

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        def options_from_form(formdata: dict[str, list[str]]) -> dict[str, str]:
            raw: dict[str, Any] = {
                k: formdata[k][0]
                for k in ("repo_url", "branch", "profile", "image")
                if k in formdata
            }
            return self.parse_options(raw).to_user_options()

        return options_from_form


def _check_user_options(spawner: SpawnerSettings, user_options: dict[str, Any]) -> None:
    """JupyterHub's (5.3+) hook, run before `start`: refuse bad options (API or form) with
    a 400 that says what is wrong. `start` parses them again into the values it uses."""
    try:
        spawner.parse_options(user_options or {})
    except InvalidOptions as e:
        raise web.HTTPError(400, str(e)) from None
