"""Egress allow-list per Docker host: workspaces reach the Hub API, the Hub's services and
the host names an admin allows, through one proxy, and nothing else.

Why a proxy, and why these pieces:

- **Names, not addresses.** Package mirrors and git hosts move between addresses and share
  them with other sites (CDNs), so an allow-list of IPs is both too wide and too brittle.
  An HTTP proxy sees the name a client asks for (the `Host` of a plain request, the target
  of a `CONNECT` for TLS) and can decide on it. The proxy is Debian's squid, run from the
  small image `images/egress` (built by `images/bin/build-egress-image.sh`).
- **One proxy per host, next to the workspace network.** Each host runs one container,
  `codeyard-egress-<network>`, in the host's network namespace, listening only on the
  workspace network's gateway address. Workspaces reach that address as the host itself
  (not forwarded between containers), so the network's inter-container block does not get
  in the way, and the proxy dials out from the host as any host process would. The spawner
  makes (or remakes, when its configuration changed) this container through the engine API
  before each workspace container is created, as `network.py` makes the network; a new
  host needs no preparation, a remote one included.
- **No direct route out.** Each workspace's own network namespace gets iptables rules that
  drop every outgoing packet except to loopback, replies on connections made to it (the
  Hub's proxy reaching Jupyter through the published port) and the egress proxy's ports.
  They are set from outside, by a short-lived container of the egress image that joins the
  workspace's network namespace with `NET_ADMIN`; the workspace itself has no capabilities
  and no-new-privileges, so nothing in it can lift them. Only the engine API is used, so
  this holds on remote hosts too (the host's own DOCKER-USER chain would need a shell
  there). The workspace's command waits for a marker the spawner writes after the rules
  are in, so no program of the workspace runs before the rules hold.
- **The Hub through a narrow reverse proxy.** The same squid listens on one more port per
  Hub upstream: the Hub API, where only the path prefixes in `hub_paths` (`/hub/api/` by
  default: the server's token check, its activity reports, the OAuth token exchange) are
  forwarded and everything else (`/hub/login`, `/hub/signup`, the admin pages) gets 403;
  and each Hub service in `PlacementSpawner.hub_service_urls` (the LLM gateway, the audit
  service), forwarded whole because each checks its own tokens. Workspaces are told these
  addresses (`JUPYTERHUB_API_URL`, `CODEYARD_LLM_URL`, ...), so even clients that ignore
  `HTTP_PROXY` (tornado's) work, and the direct route to the Hub is closed like any other.

Through the forward port the proxy refuses, whatever the allow-list says: the Docker engine
ports (2375, 2376), link-local addresses (169.254.0.0/16: cloud metadata), the workspace
network itself (other workspaces), and `CONNECT` to ports other than `connect_ports` and
`git_ports`.

**git over SSH and `git://`** go through the same forward port as a `CONNECT` tunnel to
port 22 or 9418 (`git_ports`) of an allowed host, never of another one. The workspace
image's `codeyard-connect` (a few lines of Python: no netcat) opens such a tunnel and relays
it: `GIT_SSH_COMMAND` runs ssh with it as the `ProxyCommand`, host keys checked strictly
against the site's pinned `ssh_known_hosts` and the user's own known_hosts, and
`GIT_PROXY_COMMAND` hands it git's `git://` connections. A refused host gets the proxy's
403 and a message naming the allow-list.

**The first-start clone helper** is held to the same rules as the workspace: the spawner
refuses a clone URL whose host is not on the allow-list before any container runs (a clear
message instead of git's), and the helper container itself runs behind the proxy with the
same network rules and start gate (`lock_workspace` works on any container), so a redirect
or a submodule cannot go elsewhere either.

Limits: only HTTP, HTTPS, and git over SSH and `git://` to allowed hosts leave. DNS
queries to Docker's embedded resolver (on loopback) are still answered. A workspace
container restarted by the engine itself (not by the spawner) would lose its rules; the
spawner never restarts containers, it replaces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from docker.errors import APIError, NotFound
from jupyterhub.utils import fmt_ip_url
from traitlets import Dict, Float, Integer, List, Unicode, validate
from traitlets.config import LoggingConfigurable

DockerCall = Callable[..., Awaitable[Any]]
#: Locks a started container (by id) behind the egress rules and opens its start gate.
LockCall = Callable[[str], Awaitable[None]]

#: Written in the workspace's /tmp once its network rules are in; its command waits for it.
LOCKED_MARKER = "/tmp/.codeyard-egress-locked"  # noqa: S108 - a path in the container
#: Seconds the workspace's command waits for the marker before giving up.
GATE_SECONDS = 120
#: The workspace image's tunnel helper (images/singleuser/codeyard-connect).
CONNECT_HELPER = "codeyard-connect"

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST_PATTERN = re.compile(rf"(\*\.|\.)?({_LABEL}\.)*{_LABEL}")
_locks: dict[tuple[Any, ...], asyncio.Lock] = {}


class EgressUnavailable(RuntimeError):
    """The egress proxy or a workspace's network rules could not be put in place."""


def _lock_for(key: tuple[Any, ...]) -> asyncio.Lock:
    key = (id(asyncio.get_running_loop()), *key)
    lock = _locks.get(key)
    if lock is None:
        lock = _locks[key] = asyncio.Lock()
    return lock


@dataclass(frozen=True)
class Upstream:
    """Something on the Hub's side a workspace calls through a reverse port of the proxy."""

    name: str  # squid's peer name, also the env variable for a service
    host: str  # where the proxy dials it, as the workspace's host reaches the Hub
    port: int
    listen_port: int  # the proxy's port on the workspace network's gateway
    paths: tuple[str, ...] = ()  # path prefixes let through; empty: every path


@dataclass(frozen=True)
class EgressPlan:
    """Where one host's egress proxy listens and what it forwards: what a workspace on that
    host is told, and what its network rules let through."""

    gateway: str
    subnet: str
    port: int
    hub: Upstream
    services: dict[str, tuple[Upstream, str]] = field(default_factory=dict)  # env -> (up, url)
    ssh_known_hosts: str = ""  # pinned host keys of git hosts, known_hosts lines

    @property
    def proxy_url(self) -> str:
        return f"http://{fmt_ip_url(self.gateway)}:{self.port}"

    @property
    def hub_connect_url(self) -> str:
        """`Spawner.hub_connect_url`: the Hub API as the workspace calls it (reverse port)."""
        return f"http://{fmt_ip_url(self.gateway)}:{self.hub.listen_port}"

    def service_url(self, name: str) -> str:
        """The workspace's URL of Hub service `name` (its env variable): the same URL with
        the proxy's reverse port as host and port."""
        upstream, url = self.services[name]
        parts = urlsplit(url)
        netloc = f"{fmt_ip_url(self.gateway)}:{upstream.listen_port}"
        return urlunsplit(("http", netloc, parts.path, parts.query, parts.fragment))

    def open_ports(self) -> list[int]:
        """The ports of the proxy a workspace may dial."""
        return sorted(
            {self.port, self.hub.listen_port, *(u.listen_port for u, _ in self.services.values())}
        )

    def environment(self) -> dict[str, str]:
        """Proxy variables for pip, git, curl, requests, httpx and npm (both spellings:
        tools differ in which they read). The proxy's own address bypasses it, since the
        Hub and its services are reached there directly."""
        no_proxy = ",".join(["localhost", "127.0.0.1", "::1", self.gateway])
        env = {}
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[name] = self.proxy_url
        env["NO_PROXY"] = env["no_proxy"] = no_proxy
        # git over SSH and git:// through a CONNECT tunnel (`codeyard-connect`).
        env["CODEYARD_EGRESS_PROXY"] = self.proxy_url
        env["GIT_SSH_COMMAND"] = f"{CONNECT_HELPER} --ssh"
        env["GIT_SSH_VARIANT"] = "ssh"
        env["GIT_PROXY_COMMAND"] = CONNECT_HELPER
        if self.ssh_known_hosts.strip():
            env["CODEYARD_SSH_KNOWN_HOSTS"] = self.ssh_known_hosts.strip() + "\n"
        return env


def squid_host_pattern(name: str) -> str:
    """A squid `dstdomain` entry for an allow-list entry: `*.example.com` and
    `.example.com` mean example.com and every name under it, `example.com` only itself."""
    name = name.strip().lower()
    if name.startswith("*."):
        return "." + name[2:]
    return name


def allow_list_entries(names: list[str]) -> list[str]:
    """`names` as squid `dstdomain` entries, without names a wildcard already covers
    (squid warns about those)."""
    entries = {squid_host_pattern(n) for n in names}
    wild = [e for e in entries if e.startswith(".")]
    covered = {e for e in entries if any(e == w[1:] or e.endswith(w) for w in wild)}
    return sorted(e for e in entries if e.startswith(".") or e not in covered)


def host_allowed(host: str, names: list[str]) -> bool:
    """Whether `host` is on the allow-list `names`, as squid's `dstdomain` decides it:
    `*.example.com` (or `.example.com`) is example.com and every name under it,
    `example.com` only itself. An address is never on it (the list holds names)."""
    host = host.strip().lower().rstrip(".")
    if not host:
        return False
    for entry in allow_list_entries(names):
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def check_host_pattern(name: str) -> str:
    """Refuse what is not a host name or wildcard (`*.example.com`, `.example.com`)."""
    value = name.strip().lower()
    if not _HOST_PATTERN.fullmatch(value):
        raise ValueError(f"Not a host name or *.wildcard: {name!r}")
    return value


class EgressProxy(LoggingConfigurable):
    """The per-host egress proxy and the workspaces' network rules; see the module docstring.

    Configured as `c.EgressProxy.<name>`; the Hub config sets `image` and `allowed_hosts`
    from `CodeyardHub.egress_image` and `CodeyardHub.egress_allow`.
    """

    image = Unicode(
        "",
        help="""Image of the egress proxy (squid and iptables), `images/egress`.

        Empty turns the egress proxy off: workspaces then have the workspace network's
        direct route out, with no allow-list. The image is put on each host the way the
        workspace image is (a registry pull, else a stream from the Hub's engine).""",
    ).tag(config=True)

    allowed_hosts = List(
        Unicode(),
        help="""Host names workspaces may reach over HTTP and HTTPS through the proxy, besides
        the Hub API and the Hub's services, which are always reachable.

        `pypi.org` allows exactly that name; `*.example.com` (or `.example.com`) allows
        example.com and every name under it. Names, not addresses: the proxy sees the name
        a client asked for. Empty (the default) allows no outside host at all.""",
    ).tag(config=True)

    @validate("allowed_hosts")
    def _check_allowed_hosts(self, proposal: dict[str, Any]) -> list[str]:
        return [check_host_pattern(n) for n in proposal["value"]]

    extra_hosts = Dict(
        value_trait=Unicode(),
        help="""Name -> address entries for the proxy's /etc/hosts, for allowed hosts that
        DNS does not know (an internal mirror). They change only what the proxy resolves.""",
    ).tag(config=True)

    port = Integer(
        3128,
        help="""Port of the forward proxy (HTTP_PROXY, HTTPS_PROXY) on each workspace
        network's gateway address.""",
    ).tag(config=True)

    reverse_port_base = Integer(
        3129,
        help="""First of the reverse-proxy ports on the gateway address: the Hub API, then
        one per Hub service in `PlacementSpawner.hub_service_urls` (sorted by variable).""",
    ).tag(config=True)

    hub_paths = List(
        Unicode(),
        ["/hub/api/"],
        help="""URL path prefixes of the Hub a workspace may call; every other Hub path
        (the login and sign-up pages, the admin pages) is refused with 403.

        `/hub/api/` covers what a single-user server needs: checking tokens, reporting
        activity, and the OAuth token exchange. Prefixes are relative to JupyterHub's
        `base_url`.""",
    ).tag(config=True)

    blocked_ports = List(
        Integer(),
        [2375, 2376],
        help="""Ports never reached through the proxy, on any host (the Docker engine's
        API ports by default).""",
    ).tag(config=True)

    blocked_networks = List(
        Unicode(),
        ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254"],
        help="""Address ranges never reached through the proxy, even for an allowed name
        that resolves into one: link-local addresses, where clouds serve instance metadata
        and credentials (169.254.169.254). The workspace network is always added.""",
    ).tag(config=True)

    connect_ports = List(
        Integer(),
        [443],
        help="""Ports a `CONNECT` (a TLS tunnel: HTTPS, git over HTTPS) may go to.""",
    ).tag(config=True)

    git_ports = List(
        Integer(),
        [22, 9418],
        help="""Ports of allowed hosts a `CONNECT` tunnel may also reach for git: SSH (22)
        and the git protocol (9418). The workspace image's `codeyard-connect` opens these
        tunnels for ssh (`GIT_SSH_COMMAND`) and `git://` (`GIT_PROXY_COMMAND`); only hosts
        on the allow-list are reached. Empty: git over SSH and `git://` do not leave.""",
    ).tag(config=True)

    ssh_known_hosts = Unicode(
        "",
        help="""Pinned SSH host keys of the git hosts on the allow-list, as known_hosts
        lines (`ssh-keyscan -t ed25519 git.example.com`, checked against the host's
        published fingerprint). Workspaces and the clone helper check a git host's key
        strictly against these and the user's own `~/.ssh/known_hosts`: an unknown or
        changed key is refused, never accepted on first use.""",
    ).tag(config=True)

    def allows(self, host: str) -> bool:
        """Whether the forward proxy lets a client reach `host` (the allow-list)."""
        return host_allowed(host, list(self.allowed_hosts))

    start_timeout = Float(
        60,
        help="""Seconds the proxy container may take to listen on all its ports.""",
    ).tag(config=True)

    # ---- the plan --------------------------------------------------------------------

    def plan(
        self,
        gateway: str,
        subnet: str,
        hub_host: str,
        hub_port: int,
        service_urls: Mapping[str, str],
        base_url: str = "/",
    ) -> EgressPlan:
        """What the proxy on a host whose workspace network has `gateway`/`subnet` forwards,
        for a Hub its containers reach at `hub_host`. `service_urls` are the Hub services'
        URLs as the host reaches them (env variable -> URL); `base_url` is JupyterHub's
        (`hub_paths` are relative to it)."""
        base = "/" + base_url.strip("/") if base_url.strip("/") else ""
        paths = tuple(base + p for p in self.hub_paths)
        hub = Upstream("hub", hub_host, hub_port, self.reverse_port_base, paths)
        services = {}
        for i, (name, url) in enumerate(sorted(service_urls.items()), start=1):
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            peer = "svc_" + re.sub(r"[^a-zA-Z0-9]", "_", name).lower()
            up = Upstream(peer, parts.hostname or hub_host, port, self.reverse_port_base + i)
            services[name] = (up, url)
        return EgressPlan(gateway, subnet, self.port, hub, services, self.ssh_known_hosts)

    def squid_config(self, plan: EgressPlan) -> str:
        """squid.conf for `plan`: the forward port with the allow-list, and the reverse
        ports for the Hub and its services."""
        gw = plan.gateway
        upstreams = [plan.hub, *(u for u, _ in plan.services.values())]
        lines = [
            f"http_port {gw}:{plan.port} name=forward",
        ]
        for up in upstreams:
            lines.append(f"http_port {gw}:{up.listen_port} accel name={up.name} vhost")
        for up in upstreams:
            lines += [
                # login=PASSTHRU: the workspace's own token (Authorization) reaches the Hub.
                f"cache_peer {up.host} parent {up.port} 0 no-query no-digest originserver"
                f" login=PASSTHRU name={up.name}",
                f"acl port_{up.name} myportname {up.name}",
                f"cache_peer_access {up.name} allow port_{up.name}",
                f"cache_peer_access {up.name} deny all",
                f"never_direct allow port_{up.name}",
            ]
        lines += [
            "acl from_forward myportname forward",
            "acl CONNECT method CONNECT",
            "acl connect_ports port "
            + " ".join(str(p) for p in sorted({*self.connect_ports, *self.git_ports})),
            f"acl blocked_ports port {' '.join(str(p) for p in self.blocked_ports)}",
            f"acl blocked_dst dst {' '.join([*self.blocked_networks, plan.subnet])}",
        ]
        if plan.hub.paths:
            # A prefix ending in "/" also covers the bare path (`/hub/api`, the version check).
            regex = "|".join(
                "^" + re.escape(p.rstrip("/")) + r"(/|\?|$)"
                if p.endswith("/")
                else "^" + re.escape(p)
                for p in plan.hub.paths
            )
            lines += [
                f"acl hub_paths urlpath_regex {regex}",
                "http_access deny port_hub !hub_paths",
            ]
        for up in upstreams:
            lines.append(f"http_access allow port_{up.name}")
        lines += [
            "http_access deny !from_forward",
            "http_access deny blocked_ports",
            "http_access deny CONNECT !connect_ports",
        ]
        if self.allowed_hosts:
            hosts = " ".join(allow_list_entries(self.allowed_hosts))
            lines += [
                f"acl allowed_hosts dstdomain -n {hosts}",
                "http_access deny !allowed_hosts",
                "http_access deny blocked_dst",
                "http_access allow allowed_hosts",
            ]
        lines += [
            "http_access deny all",
            "always_direct allow from_forward",
            # A fixed name: squid otherwise looks up the host's name at start, which can
            # take half a minute where reverse DNS does not answer.
            "visible_hostname codeyard-egress",
            "cache deny all",
            # The pinger needs raw sockets (a capability); the proxy needs no ICMP.
            "pinger_enable off",
            "cache_mem 8 MB",
            "forwarded_for delete",
            "httpd_suppress_version_string on",
            "pid_filename /tmp/squid/squid.pid",
            "coredump_dir /tmp/squid",
            "access_log stdio:/dev/stdout",
            "cache_log stdio:/dev/stderr",
            "logfile_rotate 0",
            "shutdown_lifetime 1 seconds",
            "max_filedescriptors 4096",
        ]
        return "\n".join(lines) + "\n"

    def container_name(self, network_name: str) -> str:
        return f"codeyard-egress-{network_name}"

    # ---- the proxy container on a host -----------------------------------------------

    async def ensure_proxy(
        self, docker: DockerCall, host_key: tuple[Any, ...], network_name: str, plan: EgressPlan
    ) -> None:
        """Make sure the host's proxy runs with `plan`'s configuration; (re)make it if not.

        The configuration's hash is a label of the container: a proxy with another one
        (a changed allow-list, a new Hub address) is replaced, so every workspace on the
        host gets the new rules at once."""
        conf = self.squid_config(plan)
        extra = sorted(self.extra_hosts.items())
        digest = hashlib.sha256(f"{self.image}\n{extra}\n{conf}".encode()).hexdigest()[:16]
        name = self.container_name(network_name)
        async with _lock_for((*host_key, name)):
            # Twice at most: a create that lost a race (409) looks again at the winner's.
            for _attempt in range(2):
                if await self._start_proxy(docker, name, network_name, conf, digest, plan):
                    return
            raise EgressUnavailable(f"egress proxy {name}: another start kept replacing it")

    async def _start_proxy(
        self,
        docker: DockerCall,
        name: str,
        network_name: str,
        conf: str,
        digest: str,
        plan: EgressPlan,
    ) -> bool:
        """One look-and-(re)make of the proxy container; False if a concurrent create won."""
        try:
            info = await docker("inspect_container", name)
        except NotFound:
            info = None
        if info is not None:
            labels = info["Config"].get("Labels") or {}
            if labels.get("codeyard.egress.config") == digest and info["State"]["Running"]:
                return True
            self.log.info("egress proxy %s: replacing it (%s)", name, digest)
            await docker("remove_container", info["Id"], force=True)
        host_config = {
            "network_mode": "host",
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "read_only": True,
            "tmpfs": {"/tmp": "rw,nosuid,nodev,mode=1777"},  # noqa: S108 - in the container
            "pids_limit": 256,
            "mem_limit": "256m",
            "restart_policy": {"Name": "unless-stopped"},
            "extra_hosts": dict(self.extra_hosts),
        }
        try:
            created = await docker(
                "create_container",
                image=self.image,
                name=name,
                environment={"CODEYARD_SQUID_CONF": conf},
                labels={"codeyard.egress.config": digest, "codeyard.egress.network": network_name},
                host_config=await docker("create_host_config", **host_config),
            )
            await docker("start", created["Id"])
        except APIError as e:
            if e.status_code != 409:
                raise EgressUnavailable(f"egress proxy {name} could not start: {e}") from e
            return False
        await self._wait_listening(docker, created["Id"], 2 + len(plan.services))
        return True

    async def _wait_listening(self, docker: DockerCall, cid: str, ports: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            raw = await docker("logs", cid, stdout=True, stderr=True)
            text = raw.decode("utf-8", "replace")
            # squid logs each listening port once per log target: count the addresses.
            listening = set(re.findall(r"Accepting .*? local=(\S+)", text))
            if len(listening) >= ports:
                return
            state = (await docker("inspect_container", cid))["State"]
            if not state["Running"] or time.monotonic() > deadline:
                tail = "\n".join(text.strip().splitlines()[-8:])
                raise EgressUnavailable(f"egress proxy did not start: {tail}")
            await asyncio.sleep(0.2)

    # ---- a workspace's network rules -------------------------------------------------

    def rules_script(self, plan: EgressPlan) -> str:
        """iptables commands closing every way out of a workspace but the proxy's ports."""
        ports = ",".join(str(p) for p in plan.open_ports())
        v4 = [
            "iptables -w -A OUTPUT -o lo -j ACCEPT",
            "iptables -w -A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            f"iptables -w -A OUTPUT -d {plan.gateway} -p tcp -m multiport --dports {ports}"
            " -j ACCEPT",
            "iptables -w -P OUTPUT DROP",
            "iptables -w -P FORWARD DROP",
        ]
        # IPv6: the same, where the kernel has it in this namespace; without it there is no
        # IPv6 route out to close.
        v6 = [
            "if ip6tables -w -L OUTPUT >/dev/null 2>&1; then",
            " ip6tables -w -A OUTPUT -o lo -j ACCEPT &&",
            " ip6tables -w -A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT &&",
            " ip6tables -w -P OUTPUT DROP && ip6tables -w -P FORWARD DROP || exit 1",
            "fi",
        ]
        return "set -e\n" + "\n".join(v4) + "\n" + "\n".join(v6) + "\n"

    async def lock_workspace(
        self, docker: DockerCall, container_id: str, plan: EgressPlan, uid: int
    ) -> None:
        """Put `plan`'s rules into the workspace's network namespace, then open its gate."""
        host_config = {
            "network_mode": f"container:{container_id}",
            "cap_drop": ["ALL"],
            # Changing the rules of the workspace's own network namespace; nothing else.
            "cap_add": ["NET_ADMIN"],
            "security_opt": ["no-new-privileges:true"],
            "read_only": True,
            "pids_limit": 32,
        }
        created = await docker(
            "create_container",
            image=self.image,
            entrypoint=["sh", "-c"],
            command=[self.rules_script(plan)],
            user="0:0",
            labels={"codeyard.helper": "egress-rules"},
            host_config=await docker("create_host_config", **host_config),
        )
        try:
            await docker("start", created["Id"])
            result = await docker("wait", created["Id"], timeout=60)
            if result.get("StatusCode") != 0:
                logs = (await docker("logs", created["Id"])).decode("utf-8", "replace")
                raise EgressUnavailable(f"workspace network rules failed: {logs.strip()}")
        finally:
            with contextlib.suppress(NotFound, APIError):
                await docker("remove_container", created["Id"], force=True)
        ex = await docker(
            "exec_create", container_id, ["touch", LOCKED_MARKER], user=f"{uid}:{uid}"
        )
        await docker("exec_start", ex["Id"])
        if (await docker("exec_inspect", ex["Id"]))["ExitCode"] != 0:
            raise EgressUnavailable("could not open the workspace's start gate")


def gated_command(command: list[str]) -> list[str]:
    """`command`, run only once the spawner wrote `LOCKED_MARKER` (the rules are in)."""
    script = (
        f'i=0; while [ ! -e {LOCKED_MARKER} ]; do i=$((i+1)); if [ "$i" -gt {GATE_SECONDS * 10} ];'
        ' then echo "codeyard: the egress rules never arrived" >&2; exit 1; fi; sleep 0.1; done;'
        ' exec "$@"'
    )
    return ["sh", "-c", script, "codeyard-egress-gate", *command]


_instances: dict[int, EgressProxy] = {}


def egress_for(config: Any, log: Any) -> EgressProxy:
    """One `EgressProxy` per Hub config, shared by its spawners."""
    found = _instances.get(id(config))
    if found is None:
        found = _instances[id(config)] = EgressProxy(config=config, log=log)
    return found


async def network_addresses(docker: DockerCall, network_name: str) -> tuple[str, str]:
    """The gateway address and subnet of `network_name` on the host behind `docker`."""
    nets = [n for n in await docker("networks", names=[network_name]) if n["Name"] == network_name]
    if not nets:
        raise EgressUnavailable(f"network {network_name} is missing")
    info = await docker("inspect_network", nets[0]["Id"])
    for cfg in (info.get("IPAM") or {}).get("Config") or []:
        if cfg.get("Gateway") and cfg.get("Subnet") and ":" not in cfg["Subnet"]:
            return str(cfg["Gateway"]), str(cfg["Subnet"])
    raise EgressUnavailable(f"network {network_name} has no IPv4 gateway")


async def prepare_workspace(spawner: Any) -> EgressPlan | None:
    """The spawner's step before creating a workspace container on its host: the proxy
    running there with this Hub's plan, and the spawner told where the Hub now is for the
    container (`hub_connect_url`). None when the egress proxy is off (no `image`)."""
    proxy = egress_for(spawner.config, spawner.log)
    network_name = spawner.workspace_network
    if not proxy.image or network_name in ("", "bridge", "default", "host", "none"):
        return None
    from . import host_env, image_transfer

    await image_transfer.put_image_on_host(spawner, proxy.image)
    gateway, subnet = await network_addresses(spawner.docker, network_name)
    address = spawner._hub_address
    urls = {
        name: host_env.service_url(template, address)
        for name, template in spawner.hub_service_urls.items()
        if name not in spawner.environment
    }
    hub_base = spawner.hub.base_url  # JupyterHub's base_url + "hub/"
    base_url = hub_base[: -len("hub/")] if hub_base.endswith("hub/") else "/"
    plan = proxy.plan(gateway, subnet, address, spawner.hub.port, urls, base_url)
    await proxy.ensure_proxy(spawner.docker, spawner.host.client_key, network_name, plan)
    spawner.hub_connect_url = plan.hub_connect_url
    return plan


async def lock_workspace(spawner: Any, plan: EgressPlan, container_id: str = "") -> None:
    """The spawner's step after starting a workspace container (or its clone helper,
    `container_id`): its network rules, then its gate."""
    proxy = egress_for(spawner.config, spawner.log)
    target = container_id or spawner.object_id
    await proxy.lock_workspace(spawner.docker, target, plan, spawner.home_uid)


def refused_clone_host(spawner: Any, host: str) -> str:
    """Why a clone from `host` is refused by the egress allow-list, or "" when it is not
    (the host is allowed, or the egress proxy is off)."""
    proxy = egress_for(spawner.config, spawner.log)
    if not proxy.image or spawner.workspace_network in ("", "bridge", "default", "host", "none"):
        return ""
    if proxy.allows(host):
        return ""
    return (
        f"{host or 'this URL'} is not on this site's egress allow-list"
        " (CodeyardHub.egress_allow), so workspaces cannot reach it; ask an admin to add it"
    )


async def prepare_clone(spawner: Any, url: str) -> tuple[dict[str, str], LockCall | None]:
    """The spawner's step before the first-start clone helper: refuse a URL whose host is
    not on the allow-list (`EgressUnavailable` with the reason), else make sure the host's
    proxy runs and return the helper's proxy environment and the call that locks the
    started helper container. ({}, None) when there is nothing to clone or no proxy."""
    if not url:
        return {}, None
    from .clone import clone_host

    reason = refused_clone_host(spawner, clone_host(url))
    if reason:
        raise EgressUnavailable(reason)
    plan = await prepare_workspace(spawner)
    if plan is None:
        return {}, None

    async def lock(container_id: str) -> None:
        await lock_workspace(spawner, plan, container_id)

    return plan.environment(), lock
