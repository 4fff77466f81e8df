"""Docker hosts, and the seam through which `PlacementSpawner` asks where a workspace runs.

`PlacementSpawner` never decides placement itself. It holds one `HostProvider` (chosen by
`PlacementSpawner.host_provider_class`) and asks it two questions:

- `await provider.choose(spawner)`: where should this workspace run? Called on a
  workspace's first start, or on every start when the provider sets
  `decides_every_start`. The answer is saved in the spawner's state by host *name*.
- `provider.get(name)`: give me the host called `name` again. Called after a Hub restart,
  on every poll/stop, so it must be cheap and must not re-run the placement policy.

and tells it two things, `await provider.started(spawner)` after a successful start and
`await provider.stopped(spawner)` after a stop, so a provider can count live load.

`LocalHostProvider` is the single local engine. The registry-backed provider (the rest of
`codeyard.placement`) implements the same two methods over the database of registered hosts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from traitlets import Bool, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .addresses import LOCAL_BRIDGE_IP, HostAddresses

if TYPE_CHECKING:
    from jupyterhub.spawner import Spawner

#: Where homes live on an engine's machine unless a setting or the registry says otherwise.
DEFAULT_STORAGE_ROOT = "/var/lib/codeyard/homes"

__all__ = [
    "DEFAULT_STORAGE_ROOT",
    "DockerHost",
    "DockerTLS",
    "HostProvider",
    "LocalHostProvider",
    "UnknownHost",
]


class UnknownHost(LookupError):
    """The host a workspace was placed on is no longer known to the provider."""


@dataclass(frozen=True)
class DockerTLS:
    """Client-certificate TLS material for a remote engine (paths on the Hub's machine)."""

    ca_cert: str
    client_cert: str
    client_key: str


@dataclass(frozen=True)
class DockerHost:
    """One Docker engine that can run workspaces.

    `host_ip` is the address on which the engine publishes workspace ports and the proxy
    reaches them. `hub_connect_ip` is where its containers reach the Hub API and the LLM
    gateway (`hub_connect_ip_set`: an admin set it, else it was derived from the route;
    `addresses.effective_hub_connect_ip` decides what the spawner hands out).
    `on_hub_machine` says the engine runs on the Hub's own machine (its unix socket or a
    loopback endpoint), where the docker bridge leads to the Hub. `storage_root` is a
    folder *on that engine's machine* under which homes
    live as `<storage_root>/<user>/<workspace>`. `storage_is_local` says the Hub shares that
    file system (the local engine), which lets the spawner create empty homes without a
    helper container. `kind` is "engine" (one Docker engine) or "swarm" (a Swarm manager,
    `codeyard.spawner.swarm`), whose `storage_root` must be mounted on every node.
    """

    name: str
    base_url: str = "unix:///var/run/docker.sock"
    storage_root: str = DEFAULT_STORAGE_ROOT
    host_ip: str = "127.0.0.1"
    region: str = "local"
    tls: DockerTLS | None = None
    storage_is_local: bool = False
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    hub_connect_ip: str = LOCAL_BRIDGE_IP
    hub_connect_ip_set: bool = False
    on_hub_machine: bool = True
    kind: str = "engine"

    @property
    def is_swarm(self) -> bool:
        """The endpoint is a Docker Swarm manager: workspaces run as Swarm services, Swarm
        picks the node, and `host_ip` is not where they are published (the node is)."""
        return self.kind == "swarm"

    @property
    def addresses(self) -> HostAddresses:
        return HostAddresses(
            hub_connect_ip=self.hub_connect_ip,
            publish_ip=self.host_ip,
            hub_connect_ip_set=self.hub_connect_ip_set,
        )

    @property
    def client_key(self) -> tuple[Any, ...]:
        """What identifies a distinct Docker client: same URL and TLS means same client."""
        return (self.base_url, self.tls)


class HostProvider(LoggingConfigurable):
    """Chooses and finds Docker hosts for `PlacementSpawner`.

    Subclasses override:

    - `async choose(spawner) -> DockerHost`: pick a host for a workspace starting for the
      first time. `spawner.user.name`, `spawner.name` and `spawner.user_options` (size
      profile, image key) are available to a policy.
    - `get(name) -> DockerHost`: look a host up by name; raise `UnknownHost` if it is gone.
    - `async started(spawner)` / `async stopped(spawner)`: the workspace's container is now
      running / stopped. No-ops here; a provider whose policy counts running workspaces
      (least-loaded) records them.
    - `async host_unreachable(name, error)` / `async host_down(name)`: a spawner found a
      host's engine unreachable / asks whether a host is known to be down. No-ops here; the
      registry provider marks and reads the host's state.

    A provider that sets `decides_every_start = True` is asked to `choose()` on every start,
    not only the first. Its `choose()` must then be sticky (return the saved host while that
    host is usable), because a different answer means the workspace *moves*: the spawner
    forgets its container and home flag and creates both on the new host. That is where
    admin pins, drains and failover after a host went down take effect.

    One provider instance is shared by every spawner of a Hub, so it may keep caches.
    It is built with the Hub's config, so its own traitlets are configurable as
    `c.<ProviderClass>.<trait>`.
    """

    decides_every_start = False

    async def choose(self, spawner: Spawner) -> DockerHost:
        raise NotImplementedError

    def get(self, name: str) -> DockerHost:
        raise NotImplementedError

    async def started(self, spawner: Spawner) -> None:
        """The workspace of `spawner` started on its host. Nothing to record by default."""

    async def stopped(self, spawner: Spawner) -> None:
        """The workspace of `spawner` stopped. Nothing to record by default."""

    async def host_unreachable(self, name: str, error: str) -> None:
        """A status check could not reach host `name`'s engine (`error` says how).

        The spawner calls this when its poll finds the machine gone, so a provider that
        keeps host states marks the host down at once instead of after its own health
        checks: the next start of that host's workspaces is then decided (moved, or refused
        until an admin confirms) without first waiting on the dead endpoint. Nothing to
        record by default.
        """

    async def host_down(self, name: str) -> str | None:
        """Why host `name` is known to be down, or None when it is not (or not known).

        The status API answers from this without calling a dead engine, so the home page
        never waits on an endpoint that will not answer. None by default.
        """
        return None


class LocalHostProvider(HostProvider):
    """The one Docker engine on the Hub's own machine."""

    host_name = Unicode(
        "local",
        help="""Name of the local host, as saved in each workspace's state.

        Changing it makes running workspaces unfindable after a restart; leave it.
        """,
    ).tag(config=True)

    base_url = Unicode(
        help="""Docker API URL of the local engine.

        Defaults to `$DOCKER_HOST` when set, else the standard socket.
        """,
    ).tag(config=True)

    @default("base_url")
    def _default_base_url(self) -> str:
        return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    host_ip = Unicode(
        "127.0.0.1",
        help="""Address the engine publishes workspace ports on.

        Loopback keeps workspaces reachable only through the Hub's proxy.
        """,
    ).tag(config=True)

    storage_root = Unicode(
        DEFAULT_STORAGE_ROOT,
        help="""Folder holding workspace homes, as `<storage_root>/<user>/<workspace>`.

        The Hub config passes `homes/` in its state folder (`c.CodeyardHub.state_dir`).
        """,
    ).tag(config=True)

    @validate("storage_root")
    def _check_storage_root(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"])
        if not os.path.isabs(value):
            raise ValueError(f"storage_root must be an absolute path, got {value!r}")
        return value

    storage_is_local = Bool(
        True,
        help="""Whether `storage_root` is on the Hub's own file system.

        True for the local engine unless the Hub itself runs in a container without that
        folder mounted; then set False and homes are made by a helper container.
        """,
    ).tag(config=True)

    region = Unicode("local", help="""Region label of the local host.""").tag(config=True)

    hub_connect_ip = Unicode(
        "",
        help="""Where this engine's containers reach the Hub API and the LLM gateway.

        Empty: the Hub's `hub_ip` when it listens on one address, else the docker bridge
        172.17.0.1 (`codeyard.placement.addresses`).
        """,
    ).tag(config=True)

    @property
    def host(self) -> DockerHost:
        return DockerHost(
            name=self.host_name,
            base_url=self.base_url,
            storage_root=self.storage_root,
            host_ip=self.host_ip,
            region=self.region,
            storage_is_local=self.storage_is_local,
            hub_connect_ip=self.hub_connect_ip or LOCAL_BRIDGE_IP,
            hub_connect_ip_set=bool(self.hub_connect_ip),
            on_hub_machine=True,
        )

    async def choose(self, spawner: Spawner) -> DockerHost:
        return self.host

    def get(self, name: str) -> DockerHost:
        if name != self.host_name:
            raise UnknownHost(name)
        return self.host
