"""What an admin configures on `PlacementSpawner`, and what a user may ask for.

`SpawnerSettings` is `PlacementSpawner`'s base: its traitlets (set as
`c.PlacementSpawner.<name>`, which traitlets applies along the class hierarchy), the
DockerSpawner defaults that fit workspaces, and the options: size profiles, the image
allow-list, and the spawn form. The lifecycle is in `spawner.py`.
"""

from __future__ import annotations

import html
import posixpath
import re
from typing import Any

from dockerspawner import DockerSpawner
from jupyterhub.traitlets import EntryPointType
from tornado import web
from traitlets import (
    Bool,
    Dict,
    Float,
    Integer,
    List,
    Set,
    TraitError,
    Unicode,
    default,
    validate,
)

from codeyard.placement.hosts import HostProvider, LocalHostProvider

from .home_quota import parse_size
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
        help="""URL schemes users may clone from; also git's `GIT_ALLOW_PROTOCOL` in the
        clone helper, so redirects and submodules are held to the same list.

        `file` (the helper's own disk) and git's program-running transports `ext::` and
        `fd::` are refused unless listed here (as "file", "ext", "fd"), which is never a
        good idea on a shared Hub. URLs carrying a password or token are always refused:
        users give those in the credential field (`GitCredentialStore`).""",
    ).tag(config=True)

    home_mount = Unicode(
        "/home/jovyan",
        help="""Path in the container where the workspace's persistent folder is mounted:
        the image user's HOME.

        The folder holds the git working tree in `work_dir` below it, Codeyard's private
        state in `.codeyard/` beside it (outside the tree, so `git clean -fdx` or a
        `rm -rf` in the tree never reaches the audit log or revert data, yet on the same
        file system, so swaps stay atomic renames and revert data hard links), and the
        user's settings, caches and `pip install --user` packages, which so persist too.
        """,
    ).tag(config=True)

    work_dir = Unicode(
        "work",
        help="""The working tree's folder inside the home (`home_mount`): the Jupyter
        server's root, where a repository is cloned and JupyterLab's file browser starts.
        A relative name, one level or more below the home, never the home itself.""",
    ).tag(config=True)

    @validate("work_dir")
    def _check_work_dir(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip("/")
        parts = value.split("/")
        if not value or any(p in ("", ".", "..") for p in parts):
            raise TraitError(f"work_dir must be a relative folder below the home: {value!r}")
        return value

    @property
    def work_mount(self) -> str:
        """The working tree's path in the container."""
        return posixpath.join(self.home_mount, self.work_dir)

    @property
    def state_mount(self) -> str:
        """Where the workspace's Codeyard state lives in the container (CODEYARD_STATE_DIR):
        beside the working tree, in the persistent home."""
        return posixpath.join(self.home_mount, ".codeyard")

    home_uid = Integer(
        1000,
        help="""Owner (uid and gid) of new homes: the image's non-root user.

        Workspace containers and the home helper run as this uid and gid, whatever the
        image's USER says, so everything in a home belongs to it.
        """,
    ).tag(config=True)

    delete_data_on_remove = Bool(
        False,
        help="""Whether deleting a workspace also deletes its home folder.

        Off by default: the container is removed, the files are kept under
        `<storage_root>/<user>/<workspace>` for an admin to archive or restore.
        """,
    ).tag(config=True)

    home_quota = Unicode(
        "0",
        help="""Disk quota of each workspace home, such as "10G" or "64M"; "0" turns it off.

        The home is then its own ext4 file system: the image file
        `<storage_root>/<user>/<workspace>.img`, loop-mounted at the home folder by a
        short-lived helper container on the workspace's host (`home_quota.py`). A full home
        answers "No space left on device" at once to every write, `fallocate` included,
        while the host's disk, the Hub's state and other homes are untouched. The storage
        root must be a shared mount on each host (the Hub makes it so on its own machine
        when it runs as root; see docs/home-quota.md). The size is fixed when the image is
        made: a new value applies to new homes; an existing one is grown by an admin with
        `resize2fs`. Not applied on Swarm hosts, whose storage is shared between nodes.
        """,
    ).tag(config=True)

    @validate("home_quota")
    def _check_home_quota(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip()
        try:
            size = parse_size(value)
        except Exception:
            raise ValueError(f"home_quota: not a size: {value!r}") from None
        if size and size < 16 * 1024 * 1024:
            raise ValueError("home_quota must be 0 (off) or at least 16M (ext4's own needs)")
        return value

    home_quota_preallocate = Bool(
        True,
        help="""Whether a home's image takes its whole quota on the host's disk when made.

        On (the default), the space is reserved up front (`fallocate`, instant), so the
        sum of the quotas can never outgrow the disk: a home that fills up meets its own
        limit, never the host's, and a new home that does not fit is refused at its first
        start with a clear message. Off, images are sparse and grow as written, so quotas
        may add up to more than the disk; if the host's disk then fills, writes into a
        home fail with I/O errors and its file system turns read-only until an admin frees
        space and runs `e2fsck`.
        """,
    ).tag(config=True)

    home_quota_keep_free = Unicode(
        "2G",
        help="""Space a host's storage file system must keep free after a new home image is
        made, such as "2G"; a first start that would leave less is refused.

        Keeps room for what shares that file system (the Hub's database and secrets when
        the storage root is in the Hub's state folder, logs, container layers).
        """,
    ).tag(config=True)

    @validate("home_quota_keep_free")
    def _check_home_quota_keep_free(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"]).strip()
        try:
            parse_size(value)
        except Exception:
            raise ValueError(f"home_quota_keep_free: not a size: {value!r}") from None
        return value

    extra_volumes = Dict(
        help="""More binds for every workspace container, as host path ->
        {"bind": container path, "mode": "ro" or "rw"}; e.g. the model's tokenizer.json,
        read-only. Added only on hosts that share the Hub's file system
        (`storage_is_local`), where the host path exists. The home is always mounted.
        On other hosts, environment variables that point into these mounts are not set
        either, so nothing in the workspace names a file that is not there.""",
    ).tag(config=True)

    hub_service_urls = Dict(
        value_trait=Unicode(),
        help="""Hub services a workspace calls, as {environment variable: URL template}, in
        which `{hub}` stands for the address the workspace's own host reaches the Hub at
        (`DockerHost.hub_connect_ip`; 172.17.0.1 on the Hub's machine, another address on
        other machines), e.g. {"CODEYARD_LLM_URL": "http://{hub}:8002"}. Every workspace
        gets each variable with its host's address, unless `environment` sets that variable
        itself (a service elsewhere).""",
    ).tag(config=True)

    @validate("hub_service_urls")
    def _check_hub_service_urls(self, proposal: Any) -> dict[str, str]:
        urls = dict(proposal["value"])
        for name, template in urls.items():
            if "{hub}" not in template or not template.startswith(("http://", "https://")):
                raise TraitError(
                    f"hub_service_urls[{name!r}] must be an http(s) URL with {{hub}} as its host"
                )
        return urls

    clone_timeout = Float(
        600,
        help="""Seconds a first-start git clone may take before the spawn fails.""",
    ).tag(config=True)

    # ---- container hardening and isolation ------------------------------------------

    pids_limit = Integer(
        1024,
        help="""Most processes and threads (together) one workspace container may run.

        Stops a fork bomb or a runaway thread pool from exhausting the host's process
        table, which would break every workspace on that host. 1024 leaves room for
        JupyterLab, the Codeyard and jupyter-ai extensions, several kernels with their BLAS
        threads, terminals and a parallel build (`make -j`), which together use a few
        hundred; the kernel counts threads, not just processes. 0 means no limit.
        """,
    ).tag(config=True)

    @validate("pids_limit")
    def _check_pids_limit(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 0:
            raise ValueError("pids_limit must be 0 (no limit) or positive")
        return int(proposal["value"])

    cap_drop = List(
        Unicode(),
        ["ALL"],
        help="""Linux capabilities removed from workspace and home-helper containers.

        All of them: the image runs Jupyter as its non-root user (uid 1000), which needs
        none, and without them even a root process in the container (after a kernel or
        setuid bug) cannot change file owners, bind low ports, use raw sockets or trace
        other processes.
        """,
    ).tag(config=True)

    cap_add = List(
        Unicode(),
        [],
        help="""Capabilities given back to workspace containers after `cap_drop`.

        None by default, because none is needed: Jupyter, kernels, terminals, git and pip
        all run as the unprivileged user. Name each one you add and why in the site
        config, e.g. ["SYS_PTRACE"] to let users attach a debugger such as gdb.
        """,
    ).tag(config=True)

    security_opt = List(
        Unicode(),
        ["no-new-privileges:true"],
        help="""Docker security options of workspace and home-helper containers.

        `no-new-privileges:true` makes setuid/setgid programs and file capabilities
        powerless, so nothing in a workspace can become root again (sudo, su, ping's file
        capability). Add a seccomp or AppArmor profile here if your hosts have one.
        """,
    ).tag(config=True)

    read_only_root = Bool(
        True,
        help="""Whether workspace containers get a read-only root file system.

        Nothing a user runs can then change the image's programs, libraries or system
        files (a replaced `python` or a line added to /etc would fool every later process
        of the workspace), and nothing is written where the admin does not expect it.
        Writable places remain: the persistent home (`home_mount`) and `tmpfs_mounts`. The
        home helper gets a read-only root too, with a writable /tmp.
        """,
    ).tag(config=True)

    tmpfs_mounts = Dict(
        value_trait=Unicode(),
        help="""Writable in-memory folders of each workspace container: path -> mount options.

        With `read_only_root` these are the only writable places besides the home.
        Default: `/tmp` alone; the image user's HOME, where Jupyter keeps its runtime
        files, settings, caches and `pip install --user` packages, is the persistent home
        itself (`home_mount`). It is `exec` (Docker's default is noexec, which breaks
        builds in /tmp). Its contents are lost when the container is replaced; its pages
        count against the workspace's memory limit, so the size profile bounds them.
        """,
    ).tag(config=True)

    @default("tmpfs_mounts")
    def _default_tmpfs_mounts(self) -> dict[str, str]:
        return {"/tmp": "rw,exec,nosuid,nodev,mode=1777"}  # noqa: S108 - in the container

    workspace_network = Unicode(
        "codeyard-workspaces",
        help="""Docker network of workspace and home-helper containers on every host.

        A bridge network made on first use on each host with `workspace_network_options`,
        which by default turn inter-container traffic off, so one user's workspace cannot
        connect to another's. Workspaces still reach the Hub API and the LLM gateway on the
        host's address, and the proxy reaches them through their published port. An
        existing network of this name is used as it is. "bridge" (or "", which leaves it
        to DockerSpawner's `network_name`) puts workspaces back on Docker's default
        bridge, where they can reach each other.
        """,
    ).tag(config=True)

    @validate("workspace_network")
    def _check_workspace_network(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"])
        # Docker's own rule for names; it also keeps the name safe in label templates.
        if value and not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", value):
            raise ValueError(f"Not a Docker network name: {value!r}")
        return value

    workspace_network_options = Dict(
        value_trait=Unicode(),
        default_value={"com.docker.network.bridge.enable_icc": "false"},
        help="""Bridge driver options used when `workspace_network` is created on a host.

        `enable_icc=false` makes the engine drop traffic between two containers of the
        network (it needs the engine's iptables management, on by default). Only used when
        the network is made; changing it later needs the network removed by an admin.
        """,
    ).tag(config=True)

    def hardening_host_config(self) -> dict[str, Any]:
        """Docker host config every container of a workspace gets, the home helper too:
        no capabilities, no new privileges, the pids limit, and the workspace network."""
        config: dict[str, Any] = {
            "cap_drop": list(self.cap_drop),
            "security_opt": list(self.security_opt),
        }
        if self.pids_limit:
            config["pids_limit"] = self.pids_limit
        if self.workspace_network:
            config["network_mode"] = self.workspace_network
        if self.read_only_root:
            config["read_only"] = True
            config["tmpfs"] = {"/tmp": "rw,nosuid,nodev,mode=1777"}  # noqa: S108 - in the container
        return config

    def workspace_host_config(self) -> dict[str, Any]:
        """`hardening_host_config` plus what only the workspace itself gets: `cap_add`
        and the writable `tmpfs_mounts` (the home helper writes only /homes and /tmp)."""
        config = self.hardening_host_config()
        if self.cap_add:
            config["cap_add"] = list(self.cap_add)
        config.pop("tmpfs", None)
        if self.tmpfs_mounts:
            config["tmpfs"] = dict(self.tmpfs_mounts)
        return config

    # DockerSpawner defaults that fit workspaces.

    @default("prefix")
    def _default_prefix(self) -> str:
        return "codeyard"

    @default("notebook_dir")
    def _default_notebook_dir(self) -> str:
        return self.work_mount

    @default("extra_create_kwargs")
    def _default_extra_create_kwargs(self) -> dict[str, Any]:
        # Rendered by DockerSpawner's templates at create time.
        return {
            # The home's owner, whatever the image's USER says: files the workspace makes
            # stay the user's, and it never runs as root (which `cap_drop` would cripple).
            "user": f"{self.home_uid}:{self.home_uid}",
            "labels": {
                "codeyard.user": "{raw_username}",
                "codeyard.workspace": "{servername}",
                # Which network it was made on, for clean-up and failover tools.
                "codeyard.network": self.workspace_network or self.network_name,
            },
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
