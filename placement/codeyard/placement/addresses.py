"""How a host's workspaces and the Hub find each other: the two addresses of every host.

- `hub_connect_ip`: where the host's containers reach the Hub API and the LLM gateway. A
  container dials it from inside its host's network, so it must be an address of the Hub's
  machine that is routable from that host. The Hub's own docker bridge (172.17.0.1) is
  right only for the Hub's own engine: on any other machine 172.17.0.1 is that machine's
  own bridge.
- `publish_ip`: where the host's engine publishes each workspace's port, and where the
  Hub's proxy (on the Hub's machine) connects to it: an address of the host itself.

Each is a registry column an admin may set (`Server.hub_connect_ip`, `Server.publish_ip`);
empty, it is derived from the endpoint here:

| endpoint | hub_connect_ip | publish_ip |
|---|---|---|
| `unix://` (the Hub's own engine) | 172.17.0.1, the docker bridge | 127.0.0.1 |
| `tcp://X`, `ssh://...@X` on this box (X loopback) | 172.17.0.1 | X |
| `tcp://X`, `ssh://...@X` elsewhere | the Hub's source address on its route to X | X |

The source address of the Hub's route to X is the address X's packets from the Hub come
from, so X can answer it: the address X's containers can dial (through their host's NAT).
It is found with a connected UDP socket (`connect()` picks the route and source address
without sending anything), the same answer as `ip route get X`.

The Hub must also *listen* there: its API and the gateway bind `hub_ip`, so a Hub serving
other machines binds 0.0.0.0 (and a firewall lets only the hosts in; docs/multi-machine.md)
or one address every host can reach. `effective_hub_connect_ip` applies that rule.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

#: The Hub's own engine's docker0 gateway: how containers on the Hub's machine reach it.
LOCAL_BRIDGE_IP = "172.17.0.1"
#: Where the Hub's own engine publishes workspace ports: loopback, only the proxy reaches them.
LOCAL_PUBLISH_IP = "127.0.0.1"
#: Addresses a listening socket uses for "every interface".
WILDCARD_IPS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names the wildcard, binds nothing


@dataclass(frozen=True)
class HostAddresses:
    """A host's two addresses and whether each was set by an admin or derived."""

    hub_connect_ip: str
    publish_ip: str
    hub_connect_ip_set: bool = False
    publish_ip_set: bool = False


def endpoint_host(endpoint: str) -> str:
    """The machine part of a `tcp://` or `ssh://` endpoint; "" for `unix://` (this box)."""
    parts = urlsplit(endpoint)
    if parts.scheme in ("tcp", "ssh") and parts.hostname:
        return parts.hostname
    return ""


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def on_hub_machine(endpoint: str) -> bool:
    """Whether the engine at `endpoint` runs on the Hub's machine (a unix socket, loopback)."""
    machine = endpoint_host(endpoint)
    return not machine or _is_loopback(machine)


def route_source(target: str, port: int = 9) -> str:
    """This machine's source address on its route to `target` (a name or an address);
    "" when there is no route or the name does not resolve."""
    try:
        infos = socket.getaddrinfo(target, port, type=socket.SOCK_DGRAM)
    except OSError:
        return ""
    for family, _type, _proto, _name, sockaddr in infos:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect(sockaddr)  # UDP: chooses the route, sends nothing
                return str(s.getsockname()[0])
        except OSError:
            continue
    return ""


def derived_addresses(endpoint: str) -> HostAddresses:
    """The addresses of the table in the module docstring for a host at `endpoint`."""
    machine = endpoint_host(endpoint)
    if not machine:
        return HostAddresses(LOCAL_BRIDGE_IP, LOCAL_PUBLISH_IP)
    if _is_loopback(machine):
        # An engine on this box with its own loopback endpoint: its containers reach this
        # box's addresses directly, as the local engine's do.
        return HostAddresses(LOCAL_BRIDGE_IP, machine)
    source = route_source(machine)
    if not source or _is_loopback(source):
        return HostAddresses(LOCAL_BRIDGE_IP, machine)
    return HostAddresses(source, machine)


def host_addresses(
    endpoint: str, hub_connect_ip: str | None = None, publish_ip: str | None = None
) -> HostAddresses:
    """A host's addresses: the admin's where set, else derived from `endpoint`."""
    derived = derived_addresses(endpoint)
    return HostAddresses(
        hub_connect_ip=hub_connect_ip or derived.hub_connect_ip,
        publish_ip=publish_ip or derived.publish_ip,
        hub_connect_ip_set=bool(hub_connect_ip),
        publish_ip_set=bool(publish_ip),
    )


class HubUnreachable(RuntimeError):
    """The Hub listens on an address this host's containers cannot reach."""


def effective_hub_connect_ip(
    hub_ip: str, host_name: str, addresses: HostAddresses, host_is_here: bool
) -> str:
    """The address a host's containers must dial, given where the Hub listens (`hub_ip`).

    A Hub bound to every interface is reachable at whatever address the host's route leads
    to: the host's own `hub_connect_ip`. A Hub bound to one address is reachable only there,
    so that address is used for every host unless an admin set the host's explicitly (NAT,
    a proxy in between). A loopback or docker-bridge `hub_ip` serves only the Hub's own
    machine: a host elsewhere is refused with the reason, never handed an address that
    leads to its own bridge.
    """
    if addresses.hub_connect_ip_set or hub_ip in WILDCARD_IPS:
        return addresses.hub_connect_ip
    if not host_is_here and (_is_loopback(hub_ip) or hub_ip == LOCAL_BRIDGE_IP):
        raise HubUnreachable(
            f"The Hub API listens on {hub_ip}, which containers on host {host_name!r} cannot"
            f" reach (on that machine {hub_ip} is its own address). Set CODEYARD_HUB_IP to"
            " 0.0.0.0 or to an address every host can reach (docs/multi-machine.md)."
        )
    return hub_ip
