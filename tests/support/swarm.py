"""A Docker Swarm of namespace machines, for the swarm host kind (ENVIRONMENT.md §11).

`running_swarm(n)` starts `n` namespace machines (`support.machines.start_machines`: each a
dockerd with its own network stack, TLS endpoint and private mount namespace), makes the
first the manager (`docker swarm init --advertise-addr <its address>`) and joins the others
as workers, over the test bridge. The swarm uses its own machines, never the run's shared
ones (`CODEYARD_TEST_MACHINES`): swarm mode changes an engine for every later user.

Homes live on storage every node mounts, as on a real cluster (NFS, CephFS, ...): one folder
of this box (`Swarm.shared`) is bind-mounted into each machine's own mount namespace at the
swarm's storage root. On this box that path stays an empty mount point, so a file seen there
would have come from somewhere else; the Hub never reads the shared folder itself (its
`storage_is_local` is false for a tcp:// endpoint) and a helper container on the manager
makes each home.

Images: each node has its own image store and Swarm has no registry of its own.
`Swarm.load_image(tag)` copies the image to the nodes with one `docker save` fanned out to
a `docker load` per node, which is what an admin does without a registry; with one, the
spawner names the registry's image and every node pulls it (docs/multi-machine.md).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.machines import STATE_PARENT, STORAGE_PARENT, Machine, start_machines

SWARM_PORT = 2377


def _docker(m: Machine, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The docker CLI against `m`'s engine (its unix socket, a file on this box)."""
    return subprocess.run(
        ["docker", "-H", m.socket, *args], capture_output=True, text=True, check=check
    )


@dataclass
class Swarm:
    """A running swarm: its nodes (the manager first), the shared homes folder, and the
    storage root every node mounts it at."""

    nodes: list[Machine]
    shared: str  # the folder on this box that every node mounts (the "NFS server")
    storage_root: str  # where every node mounts it (an empty folder on this box)

    @property
    def manager(self) -> Machine:
        return self.nodes[0]

    @property
    def endpoint(self) -> str:
        return self.manager.endpoint

    def registration(self, name: str, region: str = "") -> dict[str, Any]:
        """What an admin registers: the manager's TLS endpoint and credential, kind swarm,
        the shared storage root."""
        return {
            "name": name,
            "kind": "swarm",
            "endpoint": self.manager.endpoint,
            "credential": self.manager.credential,
            "region": region,
            "storage_root": self.storage_root,
            "storage_shared": True,
        }

    def node_of(self, address: str) -> Machine:
        """The machine with this address on the test bridge."""
        for m in self.nodes:
            if m.ip == address:
                return m
        raise LookupError(f"no node at {address}")

    def node_id(self, m: Machine) -> str:
        """`m`'s Swarm node id."""
        return _docker(m, "info", "--format", "{{.Swarm.NodeID}}").stdout.strip()

    def label(self, m: Machine, key: str, value: str) -> None:
        """Give node `m` the node label `key=value` (what placement constraints match)."""
        _docker(self.manager, "node", "update", "--label-add", f"{key}={value}", self.node_id(m))

    def drain(self, m: Machine) -> None:
        """`docker node update --availability drain` on the manager: Swarm moves its tasks."""
        _docker(self.manager, "node", "update", "--availability", "drain", self.node_id(m))

    def activate(self, m: Machine) -> None:
        _docker(self.manager, "node", "update", "--availability", "active", self.node_id(m))

    def nodes_ready(self) -> dict[str, str]:
        """{node address: "<status>/<availability>"} as the manager sees them."""
        out = _docker(
            self.manager,
            "node",
            "ls",
            "--format",
            "{{.ID}}",
        ).stdout.split()
        found: dict[str, str] = {}
        for node in out:
            addr = _docker(
                self.manager,
                "node",
                "inspect",
                node,
                "--format",
                "{{.Status.Addr}} {{.Status.State}}/{{.Spec.Availability}}",
            ).stdout.split()
            found[addr[0]] = addr[1]
        return found

    def load_image(self, tag: str, nodes: list[Machine] | None = None) -> float:
        """Copy `tag` from this box's engine to those of `nodes` (default: every node)
        that lack it, with one `docker save` fanned out to a `docker load` per node (the
        save, a gigabyte read from this box's disk, is the slow half); return the seconds
        it took, 0 when every node had it."""
        targets = [m for m in (self.nodes if nodes is None else nodes) if not m.has_image(tag)]
        if not targets:
            return 0.0
        started = time.monotonic()
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        loads = [
            subprocess.Popen(
                ["docker", "-H", m.socket, "load", "-q"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for m in targets
        ]
        assert save.stdout is not None
        try:
            for chunk in iter(lambda: save.stdout.read(1 << 20), b""):  # type: ignore[union-attr]
                for load in loads:
                    assert load.stdin is not None
                    load.stdin.write(chunk)
        finally:
            for load in loads:
                if load.stdin:
                    load.stdin.close()
            save.stdout.close()
            save.wait(60)
        for m, load in zip(targets, loads, strict=True):
            assert load.stderr is not None
            err = load.stderr.read().decode(errors="replace").strip()
            load.wait(600)
            if save.returncode or load.returncode:
                raise RuntimeError(f"loading {tag} into {m.name} failed: {err}")
        return time.monotonic() - started

    def on_node(self, m: Machine, *cmd: str) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in `m`'s own mount namespace (where the shared storage is mounted)."""
        return subprocess.run(
            ["nsenter", "-t", str(m.pid), "-m", *cmd], capture_output=True, text=True
        )


def _form_swarm(nodes: list[Machine]) -> None:
    manager, workers = nodes[0], nodes[1:]
    _docker(
        manager,
        "swarm",
        "init",
        "--advertise-addr",
        manager.ip,
        "--listen-addr",
        f"{manager.ip}:{SWARM_PORT}",
    )
    token = _docker(manager, "swarm", "join-token", "-q", "worker").stdout.strip()
    for m in workers:
        _docker(
            m,
            "swarm",
            "join",
            "--advertise-addr",
            m.ip,
            "--token",
            token,
            f"{manager.ip}:{SWARM_PORT}",
        )
    deadline = time.monotonic() + 60
    while True:
        states = _docker(manager, "node", "ls", "--format", "{{.Status}}").stdout.split()
        if len(states) == len(nodes) and all(s == "Ready" for s in states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"swarm nodes not ready: {states}")
        time.sleep(0.5)


def _mount_shared(nodes: list[Machine], shared: Path, storage_root: Path) -> None:
    """Bind-mount `shared` at `storage_root` inside each node's own mount namespace."""
    storage_root.mkdir(mode=0o755, exist_ok=True)
    for m in nodes:
        subprocess.run(
            ["nsenter", "-t", str(m.pid), "-m", "mount", "--bind", str(shared), str(storage_root)],
            capture_output=True,
            text=True,
            check=True,
        )


def _leave(nodes: list[Machine]) -> None:
    """Every node leaves the swarm (workers first) and drops its tasks: a dockerd in swarm
    mode whose managers are gone takes its full stop grace to exit, one after another."""
    for m in reversed(nodes):
        if m.pid:
            _docker(m, "swarm", "leave", "--force", check=False)


@contextlib.contextmanager
def running_swarm(count: int = 3, data_size: str = "3g") -> Iterator[Swarm]:
    """A swarm of `count` fresh namespace machines with shared homes; removed afterwards
    (the machines with everything in them, the shared folder, the mount point).

    Each node's image store is a tmpfs of `data_size` (RAM is used only as far as it is
    filled): a workspace image is a gigabyte per node, and writing it to this box's disk
    and deleting it again took minutes under load; in memory both take seconds."""
    base = Path(tempfile.mkdtemp(prefix="cyswarm-", dir=STATE_PARENT))
    shared = base / "shared"
    shared.mkdir(mode=0o755)
    storage_root = STORAGE_PARENT / f"{base.name}-homes"
    try:
        with start_machines(count, data_size=data_size) as nodes:
            try:
                _mount_shared(nodes, shared, storage_root)
                _form_swarm(nodes)
                yield Swarm(nodes=list(nodes), shared=str(shared), storage_root=str(storage_root))
            finally:
                _leave(nodes)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        with contextlib.suppress(OSError):
            storage_root.rmdir()  # an empty mount point on this box
