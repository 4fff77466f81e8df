"""What a workspace gets: the images users may pick, how many workspaces each user may have,
size profiles, the spawn timeout and idle culling.

Part of `CodeyardHub` (hub_settings.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core_settings import CoreSettings, env, env_bool
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default, validate


class WorkspaceSettings(CoreSettings):
    """Images, limits and culling for workspaces; configured as `c.CodeyardHub.*`."""

    image = Unicode(
        help="""Default single-user image.

        Env: CODEYARD_IMAGE. Default: the tag `images/bin/build-images.sh` wrote to
        `<state_dir>/singleuser-image`.
        """,
    ).tag(config=True)

    @default("image")
    def _default_image(self) -> str:
        image = os.environ.get("CODEYARD_IMAGE")
        if image:
            return image
        tag_file = Path(self.state_dir) / "singleuser-image"
        if tag_file.exists():
            return tag_file.read_text().strip()
        return "codeyard/singleuser:latest"

    images = Dict(
        help="""Images users may pick, as display name -> image. Users never type an image.

        Default: {"Codeyard (Python, JupyterLab, Jupyter AI)": <image>}.
        """,
    ).tag(config=True)

    @default("images")
    def _default_images(self) -> dict[str, str]:
        return {"Codeyard (Python, JupyterLab, Jupyter AI)": self.image}

    home_quota = Unicode(
        help="""Disk quota of each workspace home, such as "10G"; "0" turns it off
        (`PlacementSpawner.home_quota`, docs/home-quota.md). Env: CODEYARD_HOME_QUOTA.
        Default "0"; `make up` sets 10G.""",
    ).tag(config=True)

    @default("home_quota")
    def _default_home_quota(self) -> str:
        return env("CODEYARD_HOME_QUOTA", "0")

    workspaces_per_user = Integer(
        help="""Most workspaces (named servers) one user may have. Env:
        CODEYARD_WORKSPACES_PER_USER. Default 5; 0 means no limit.""",
    ).tag(config=True)

    @default("workspaces_per_user")
    def _default_workspaces_per_user(self) -> int:
        return int(env("CODEYARD_WORKSPACES_PER_USER", "5"))

    cull_idle_timeout = Integer(
        help="""Seconds without activity before a workspace is stopped (its files stay).

        Env: CODEYARD_CULL_TIMEOUT. Default 3600; 0 turns the idle culler off.
        """,
    ).tag(config=True)

    @default("cull_idle_timeout")
    def _default_cull_idle_timeout(self) -> int:
        return int(env("CODEYARD_CULL_TIMEOUT", "3600"))

    cull_every = Integer(
        help="""Seconds between idle checks. Default: a tenth of the timeout, at least 60.""",
    ).tag(config=True)

    @default("cull_every")
    def _default_cull_every(self) -> int:
        return max(60, self.cull_idle_timeout // 10)

    spawn_timeout = Float(
        help="""Seconds a workspace may take from request to answering, clone included.

        Sized for a loaded 2-core host starting many jupyter-ai servers at once (20
        concurrent starts took about 300 s there). Env: CODEYARD_SPAWN_TIMEOUT. Default 600.
        """,
    ).tag(config=True)

    @default("spawn_timeout")
    def _default_spawn_timeout(self) -> float:
        return float(env("CODEYARD_SPAWN_TIMEOUT", "600"))

    @validate("spawn_timeout")
    def _check_spawn_timeout(self, proposal: dict[str, Any]) -> float:
        if proposal["value"] <= 0:
            raise ValueError("spawn_timeout must be positive")
        return float(proposal["value"])

    poll_interval = Integer(
        help="""Seconds between the Hub's checks that each running workspace's container
        still runs (`Spawner.poll_interval`).

        It bounds how long a workspace whose machine died still shows as running: the Hub
        notices within this interval (plus JupyterHub's 10% jitter) plus
        `PlacementSpawner.engine_status_timeout` (10 s), then shows the state ERROR with
        "machine <host> unreachable since <time>" and marks the host down
        (docs/multi-machine.md, "When a machine dies"). Each check is one short engine call
        per running workspace; with many hundreds of workspaces per host a longer interval
        lightens that load. Env: CODEYARD_POLL_INTERVAL. Default 30; 0 turns polling off
        (then a dead machine is noticed only at the next start or Hub restart).""",
    ).tag(config=True)

    @default("poll_interval")
    def _default_poll_interval(self) -> int:
        return int(env("CODEYARD_POLL_INTERVAL", "30"))

    @validate("poll_interval")
    def _check_poll_interval(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 0:
            raise ValueError("poll_interval must be 0 (off) or a number of seconds")
        return int(proposal["value"])

    patch_only = Bool(
        help="""Take "code changes reach disk only through diff patches" literally in every
        workspace: the Contents API refuses writes (saves, uploads, renames, deletes) with a
        message that points to the AI panel, and terminals are off. Kernels still run, and
        their writes are recorded as external changes (docs/change-records.md). Passed to
        each workspace as CODEYARD_PATCH_ONLY=1. Env: CODEYARD_PATCH_ONLY. Default off.""",
    ).tag(config=True)

    @default("patch_only")
    def _default_patch_only(self) -> bool:
        return env_bool("CODEYARD_PATCH_ONLY", False)

    profiles = Dict(
        help="""Size profiles, name -> {"display_name", "cpu", "mem"}; see
        `PlacementSpawner.profiles`. Env: CODEYARD_PROFILES as JSON. Empty: the spawner's
        defaults (small 1 CPU/2G, medium 2/4G, large 4/8G).""",
    ).tag(config=True)

    @default("profiles")
    def _default_profiles(self) -> dict[str, Any]:
        raw = os.environ.get("CODEYARD_PROFILES")
        return json.loads(raw) if raw else {}

    # ---- egress: what workspaces may reach (codeyard.spawner.egress, docs/network.md) ---

    egress_allow = List(
        Unicode(),
        help="""Host names workspaces may reach over HTTP(S), through each host's egress proxy.

        Names or wildcards: `pypi.org` allows exactly that name, `*.example.com` that domain
        and every name under it; typically the package mirrors and git hosts users need.
        The Hub API and the Hub's services are always reachable; everything else (other
        workspaces, 169.254.169.254, Docker engine ports, hosts not listed) is refused.
        Env: CODEYARD_EGRESS_ALLOW, comma-separated. Default: empty (no outside host).
        Sets `EgressProxy.allowed_hosts`.""",
    ).tag(config=True)

    @default("egress_allow")
    def _default_egress_allow(self) -> list[str]:
        raw = env("CODEYARD_EGRESS_ALLOW", "")
        return [h.strip() for h in raw.split(",") if h.strip()]

    egress_image = Unicode(
        help="""Image of the per-host egress proxy (`images/egress`); empty turns the proxy
        off, leaving workspaces a direct route out.

        Env: CODEYARD_EGRESS_IMAGE. Default: the tag `images/bin/build-egress-image.sh`
        (run by `build-images.sh`) wrote to `<state_dir>/egress-image`, if any. Sets
        `EgressProxy.image`.""",
    ).tag(config=True)

    @default("egress_image")
    def _default_egress_image(self) -> str:
        image = env("CODEYARD_EGRESS_IMAGE", "")
        if image:
            return "" if image == "none" else image
        tag_file = Path(self.state_dir) / "egress-image"
        return tag_file.read_text().strip() if tag_file.exists() else ""

    # ---- the image registry hosts pull from (codeyard.spawner.image_transfer) ----------

    registry = Unicode(
        help="""Image registry every Docker host pulls the workspace image from, `host:port`.

        Env: CODEYARD_REGISTRY (`none`: no registry; hosts get the image streamed over their
        engine API). Default: the registry `make up` started (hub_config/up.d/05-registry.sh
        writes its address to `<state>/registry/address`), if any.""",
    ).tag(config=True)

    @default("registry")
    def _default_registry(self) -> str:
        value = env("CODEYARD_REGISTRY", "")
        if value:
            return "" if value == "none" else value
        path = Path(self.state_dir, "registry", "address")
        return path.read_text().strip() if path.exists() else ""

    registry_username = Unicode(
        help="""Login for the registry, if it needs one. Env: CODEYARD_REGISTRY_USER.""",
    ).tag(config=True)

    @default("registry_username")
    def _default_registry_username(self) -> str:
        return env("CODEYARD_REGISTRY_USER", "")

    registry_password = Unicode(
        help="""Password of that login. Env: CODEYARD_REGISTRY_PASSWORD.""",
    ).tag(config=True)

    @default("registry_password")
    def _default_registry_password(self) -> str:
        return env("CODEYARD_REGISTRY_PASSWORD", "")

    registry_ca_file = Unicode(
        help="""CA the Hub checks the registry's certificate with. Env: CODEYARD_REGISTRY_CA.
        Default: `<state>/registry/ca.crt` when it exists (the registry `make up` runs).""",
    ).tag(config=True)

    @default("registry_ca_file")
    def _default_registry_ca_file(self) -> str:
        value = env("CODEYARD_REGISTRY_CA", "")
        if value:
            return value
        path = Path(self.state_dir, "registry", "ca.crt")
        return str(path) if path.exists() else ""
