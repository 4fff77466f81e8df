"""Namespace machines: Docker hosts that behave like other computers (ENVIRONMENT.md §10).

Each machine is a dockerd in its own network namespace, joined to a test bridge on this box
(`10.98.K.1/24`, the Hub's side), with its own address `10.98.K.N`, its own `docker0` (at
172.17.0.1 again, as on any fresh machine), its own iptables and NAT, a TLS endpoint
`tcp://10.98.K.N:2376` signed by a throwaway CA, and its own filesystem for homes: dockerd
runs in a private mount namespace with a tmpfs mounted over its storage root, so what a
workspace writes there is invisible on this box (the same folder here stays empty).

The engines of tests/placement (§4) share this box's network stack and disk, which hides
exactly what breaks on a real second machine: a container dialling 172.17.0.1 reaches its
own machine, not the Hub; a file the Hub can read is not on the other machine.

Images: each machine has its own image store. `Machine.load_image(tag)` copies an image from
this box's engine with `docker save | docker load` over the machine's engine API, for tests
that need the image there before the Hub starts; the product's own paths (a registry pull,
else a stream) are `codeyard.spawner.image_transfer` (docs/multi-machine.md).

Start them once per run and share them: `tests/support/with-machines.sh CMD...` (or
`python -m support.machines CMD...`) starts the machines, exports their description as
`CODEYARD_TEST_MACHINES` (JSON) and runs CMD; `make test` runs every suite under it.
`machines()` (the fixtures' entry point) reuses that description when it is set and starts
machines of its own otherwise. A shared machine outlives the test: a test that kills it,
fills its disk or puts it in a swarm starts its own with `start_machines()`. Clean-up
(dockerd and everything left in its namespace by process id, the namespace, the veth, the
bridge, the DOCKER-USER rules, mounts, folders) runs even after a failed start.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from support.pki import CA
from support.processes import kill_cgroup, pid_alive

ENV = "CODEYARD_TEST_MACHINES"
ENGINE_PORT = 2376
#: Where the machines' state folders go (data roots hold loaded images: on disk, not tmpfs).
STATE_PARENT = Path("/var/tmp")
#: Parent of the machines' storage roots: on this box they stay empty mount points.
STORAGE_PARENT = Path("/srv")


def _run(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, **kw)


def _kill_pid(pid: int, grace: float) -> None:
    """SIGTERM `pid`, SIGKILL it after `grace` seconds if it is still there."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def can_run_machines() -> str | None:
    """None if this box can run namespace machines, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, bridges, dockerd)"
    for tool in ("dockerd", "ip", "iptables", "nsenter", "unshare"):
        if not shutil.which(tool):
            return f"{tool} is missing"
    return None


@dataclass
class Machine:
    """One namespace machine, described by what a test needs to use it."""

    name: str  # registry name and network namespace name
    ip: str  # its address on the test bridge
    gateway: str  # the Hub side of the test bridge (this box)
    root: str  # its state folder on this box (certs, data root, exec root, log)
    storage_root: str  # homes folder on the machine (an empty mount point on this box)
    veth: str  # this box's end of the veth pair
    ca: str = field(default="", repr=False)  # PEM of the CA that signed its server cert
    client_cert: str = field(default="", repr=False)
    client_key: str = field(default="", repr=False)
    pid: int = 0  # dockerd's process id
    data_size: str = ""  # tmpfs size of its image store ("" : this box's disk)

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.ip}:{ENGINE_PORT}"

    @property
    def socket(self) -> str:
        """The engine's unix socket; a file on this box's disk, usable from here."""
        return f"unix://{self.root}/docker.sock"

    @property
    def credential(self) -> dict[str, str]:
        """The registry credential (`{"kind": "tls", "ca", "cert", "key"}`)."""
        return {"kind": "tls", "ca": self.ca, "cert": self.client_cert, "key": self.client_key}

    def registration(self, **fields: Any) -> dict[str, Any]:
        """The fields that register this machine as a host in the placement registry: its
        name, engine endpoint, credential and homes folder, with `fields` added or replaced
        (region, shared storage, another name)."""
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "credential": self.credential,
            "storage_root": self.storage_root,
            **fields,
        }

    def client(self, timeout: float = 60.0) -> Any:
        """A TLS docker-py client (`HostClient`) for the machine's engine, as the Hub has."""
        from codeyard.placement.connect import HostClient

        return HostClient(self.endpoint, "tls", self.credential, timeout=timeout)

    def nsenter(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in the machine's network namespace."""
        return _run("nsenter", f"--net=/var/run/netns/{self.name}", *cmd, check=check)

    def has_image(self, tag: str) -> bool:
        out = _run("docker", "-H", self.socket, "image", "inspect", tag, check=False)
        return out.returncode == 0

    def load_image(self, tag: str) -> float:
        """Copy `tag` from this box's engine (`docker save | docker load` over the machine's
        engine API); return the seconds it took, 0 when it was there already."""
        if self.has_image(tag):
            return 0.0
        started = time.monotonic()
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        try:
            load = subprocess.run(
                ["docker", "-H", self.socket, "load", "-q"],
                stdin=save.stdout,
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            if save.stdout:
                save.stdout.close()
            save.wait(60)
        if save.returncode or load.returncode:
            raise RuntimeError(f"loading {tag} into {self.name} failed: {load.stderr.strip()}")
        return time.monotonic() - started


@dataclass
class Network:
    """The test bridge and its DOCKER-USER rules."""

    bridge: str
    subnet_prefix: str  # "10.98.K"
    rules: list[list[str]] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        return f"{self.subnet_prefix}.1"


def _free_subnet() -> str:
    """The first `10.98.K` no interface of this box uses (runs can overlap)."""
    used = _run("ip", "-4", "-br", "addr").stdout
    for k in range(0, 250):
        if f" 10.98.{k}." not in used and f"10.98.{k}.1/" not in used:
            return f"10.98.{k}"
    raise RuntimeError("no free 10.98.K.0/24 subnet")


def _start_network(tag: str) -> Network:
    net = Network(bridge=f"cybr{tag}", subnet_prefix=_free_subnet())
    _run("ip", "link", "add", net.bridge, "type", "bridge")
    _run("ip", "addr", "add", f"{net.gateway}/24", "dev", net.bridge)
    _run("ip", "link", "set", net.bridge, "up")
    # The main engine sets FORWARD's policy to DROP, and bridged frames pass iptables. On a
    # fresh machine no engine has run yet and its DOCKER-USER chain does not exist: make it,
    # so these rules are there when the engine starts (it keeps the chain and jumps to it).
    _run("iptables", "-N", "DOCKER-USER", check=False)
    for rule in (["-i", net.bridge, "-j", "ACCEPT"], ["-o", net.bridge, "-j", "ACCEPT"]):
        _run("iptables", "-I", "DOCKER-USER", *rule)
        net.rules.append(rule)
    return net


def _stop_network(net: Network) -> None:
    for rule in net.rules:
        _run("iptables", "-D", "DOCKER-USER", *rule, check=False)
    _run("ip", "link", "del", net.bridge, check=False)


def _dockerd_command(m: Machine) -> list[str]:
    r = m.root
    dockerd = " ".join(
        [
            "exec dockerd",
            f"--data-root {r}/data",
            f"--exec-root {r}/exec",
            f"--pidfile {r}/docker.pid",
            f"-H unix://{r}/docker.sock",
            f"-H tcp://{m.ip}:{ENGINE_PORT}",
            "--tlsverify",
            f"--tlscacert {r}/ca.pem",
            f"--tlscert {r}/server-cert.pem",
            f"--tlskey {r}/server-key.pem",
            f"--cgroup-parent /docker-{m.name}",
            "--storage-driver overlay2",
        ]
    )
    # Its own mount namespace with a tmpfs over the storage root: the machine's own disk.
    script = f"mount -t tmpfs -o mode=0755 tmpfs {m.storage_root} && {dockerd}"
    if m.data_size:
        # A small image store, for a machine whose disk is full.
        mount_data = f"mkdir -p {r}/data && mount -t tmpfs -o size={m.data_size} tmpfs {r}/data"
        script = f"{mount_data} && {script}"
    return [
        "nsenter",
        f"--net=/var/run/netns/{m.name}",
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
    ]


def _start_machine(
    net: Network,
    tag: str,
    n: int,
    ca: CA,
    started: list[Machine],
    wait: float = 60.0,
    data_size: str = "",
) -> Machine:
    """Start machine `n`; it is in `started` from its first step, so clean-up finds it."""
    name = f"cy{tag}h{n}"
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=STATE_PARENT))
    storage = STORAGE_PARENT / f"{name}-homes"
    m = Machine(
        name=name,
        ip=f"{net.subnet_prefix}.{n + 1}",
        gateway=net.gateway,
        root=str(root),
        storage_root=str(storage),
        veth=f"cv{tag}{n}",
        data_size=data_size,
    )
    started.append(m)
    storage.mkdir(mode=0o755, parents=True, exist_ok=True)
    server = ca.server(m.ip)
    client = ca.client()
    m.ca, m.client_cert, m.client_key = ca.pem, client.cert, client.key
    (root / "ca.pem").write_text(ca.pem)
    (root / "server-cert.pem").write_text(server.cert)
    key = root / "server-key.pem"
    key.write_text(server.key)
    key.chmod(0o600)
    _run("ip", "netns", "add", m.name)
    peer = f"ce{tag}{n}"
    _run("ip", "link", "add", m.veth, "type", "veth", "peer", "name", peer)
    _run("ip", "link", "set", peer, "netns", m.name)
    _run("ip", "link", "set", m.veth, "master", net.bridge)
    _run("ip", "link", "set", m.veth, "up")
    m.nsenter("ip", "addr", "add", f"{m.ip}/24", "dev", peer)
    m.nsenter("ip", "link", "set", peer, "up")
    m.nsenter("ip", "link", "set", "lo", "up")
    m.nsenter("ip", "route", "add", "default", "via", net.gateway)
    with (root / "dockerd.log").open("ab") as log:
        proc = subprocess.Popen(
            _dockerd_command(m), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    m.pid = proc.pid  # nsenter, unshare and sh all exec: this is dockerd's pid
    from codeyard.placement.probe import probe

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log_text = (root / "dockerd.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"dockerd of {m.name} exited ({proc.returncode}):\n{log_text}")
        if probe(m.endpoint, "tls", m.credential, timeout=2, details=False)["ok"]:
            return m
        time.sleep(0.3)
    raise RuntimeError(f"dockerd of {m.name} not ready in {wait}s; see {root}/dockerd.log")


def _stop_machine(m: Machine) -> None:
    """Stop dockerd by its pid, then whatever is left in its namespace (containerd, shims)
    and its cgroups (containers) by theirs; remove the namespace, the veth, mounts and
    folders."""
    if m.pid and pid_alive(m.pid):
        _kill_pid(m.pid, 30)
    if os.path.exists(f"/var/run/netns/{m.name}"):
        left = _run("ip", "netns", "pids", m.name, check=False).stdout.split()
        for pid in left:
            _kill_pid(int(pid), 5)
        _run("ip", "netns", "del", m.name, check=False)
    # A container runs in a network namespace of its own, so the machine's netns does not
    # list it, and a dockerd that was killed (a machine dying) leaves its containers
    # running, orphaned: two idle workspaces outlived a CI run's test_machine_death so.
    kill_cgroup(f"docker-{m.name}")
    _run("ip", "link", "del", m.veth, check=False)
    root = m.root.rstrip("/")
    for line in reversed(Path("/proc/mounts").read_text().splitlines()):
        point = line.split()[1]
        if point == m.storage_root or point.startswith(root + "/"):
            _run("umount", "-l", point, check=False)
    shutil.rmtree(m.root, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(m.storage_root)  # empty on this box; never rmtree a path of the machine's


@contextlib.contextmanager
def start_machines(count: int = 1, data_size: str = "") -> Iterator[list[Machine]]:
    """Start `count` namespace machines on a fresh test bridge; remove everything afterwards.
    `data_size` (e.g. "8m") puts each machine's image store on a tmpfs of that size."""
    if why := can_run_machines():
        raise RuntimeError(f"namespace machines unavailable: {why}")
    tag = secrets.token_hex(2)
    ca = CA(f"codeyard-machines-{tag}")
    started: list[Machine] = []
    net: Network | None = None
    try:
        net = _start_network(tag)
        for n in range(1, count + 1):
            _start_machine(net, tag, n, ca, started, data_size=data_size)
        yield started
    finally:
        for m in started:
            _stop_machine(m)
        if net is not None:
            _stop_network(net)


def describe(running: list[Machine]) -> str:
    """The `CODEYARD_TEST_MACHINES` value for `running`."""
    return json.dumps([asdict(m) for m in running])


def from_env() -> list[Machine] | None:
    """The machines a wrapper started for this run, or None."""
    text = os.environ.get(ENV)
    if not text:
        return None
    return [Machine(**item) for item in json.loads(text)]


@contextlib.contextmanager
def machines(count: int = 1) -> Iterator[list[Machine]]:
    """The run's machines (`CODEYARD_TEST_MACHINES`) when set, else `count` of our own."""
    shared = from_env()
    if shared is not None:
        if len(shared) < count:
            raise RuntimeError(f"{ENV} describes {len(shared)} machines, {count} needed")
        yield shared[:count]
        return
    with start_machines(count) as running:
        yield running


def main(argv: list[str]) -> int:
    """`python -m support.machines [-n N] CMD...`: run CMD with N (default 1) namespace
    machines described in CODEYARD_TEST_MACHINES; return CMD's exit status."""
    count = 1
    if argv[:1] == ["-n"] and len(argv) > 1:
        count, argv = int(argv[1]), argv[2:]
    if not argv:
        print("usage: with-machines.sh [-n N] COMMAND [ARG...]", file=sys.stderr)
        return 2
    shared = from_env()
    if shared is not None and len(shared) >= count:  # an outer wrapper's: share those
        return subprocess.call(argv)
    if why := can_run_machines():
        # The suites still run: each machine fixture skips with this reason.
        print(f"no namespace machines ({why}); running without them", file=sys.stderr)
        return subprocess.call(argv)
    with start_machines(count) as running:
        for m in running:
            print(f"machine {m.name}: {m.endpoint}, storage {m.storage_root}", file=sys.stderr)
        proc = subprocess.Popen(argv, env={**os.environ, ENV: describe(running)})
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            return proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
