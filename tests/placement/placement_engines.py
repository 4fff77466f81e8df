"""Extra real dockerd engines with TLS on loopback addresses (ENVIRONMENT.md §4), and the
helpers the engine tests share: `Engine.client()`, `register()` and `fake_spawner()`.

Each engine gets its own state folder, its own bridge (`br-hsN`, or `br-hsN-<k>` if another
run holds that name), a free TCP port on its own 127.0.0.N, and a server certificate from the
test CA. Engines are stopped by their own PIDs (and their managed containerd by its pidfile);
their bridges are deleted afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from placement_pki import CA
from support.processes import kill_cgroup, pid_alive

from codeyard.placement.connect import HostClient
from codeyard.placement.probe import probe


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _links() -> set[str]:
    return {
        line.split()[0].split("@")[0] for line in _ip("-br", "link").stdout.splitlines() if line
    }


def _used_subnets() -> str:
    return _ip("-4", "-br", "addr").stdout


@dataclass
class Engine:
    ip: str
    ca: CA
    root: Path
    port: int = 0
    bridge: str = ""
    subnet: str = ""
    proc: subprocess.Popen[bytes] | None = None
    client_bundle: dict[str, str] = field(default_factory=dict)
    network_bridges: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return f"hs{self.ip.rsplit('.', 1)[1]}"

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.ip}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def client(self, timeout: float = 30.0) -> HostClient:
        """A TLS Docker client for this engine (`with engine.client() as c: c.api...`)."""
        return HostClient(self.endpoint, "tls", self.client_bundle, timeout=timeout)

    def setup(self) -> None:
        n = int(self.ip.rsplit(".", 1)[1])
        links, used = _links(), _used_subnets()
        self.bridge = f"br-hs{n}"
        k = 0
        while self.bridge in links:
            k += 1
            self.bridge = f"br-hs{n}-{k}"
        third = n
        while f"172.30.{third}." in used:
            third = (third + 17) % 250 + 2
        self.subnet = f"172.30.{third}.1/24"
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", self.subnet, "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        server = self.ca.server(self.ip)
        for fname, text in (
            ("ca.pem", self.ca.pem),
            ("server-cert.pem", server.cert),
            ("server-key.pem", server.key),
        ):
            (self.root / fname).write_text(text)
        (self.root / "server-key.pem").chmod(0o600)
        self.port = _free_port(self.ip)
        self.client_bundle = self.ca.bundle()

    def start(self, wait: float = 60.0) -> None:
        r = self.root
        cmd = [
            "dockerd",
            "--data-root", str(r / "data"),
            "--exec-root", str(r / "exec"),
            "--pidfile", str(r / "docker.pid"),
            "-H", f"unix://{r / 'docker.sock'}",
            "-H", f"tcp://{self.ip}:{self.port}",
            "--tlsverify",
            "--tlscacert", str(r / "ca.pem"),
            "--tlscert", str(r / "server-cert.pem"),
            "--tlskey", str(r / "server-key.pem"),
            "--bridge", self.bridge,
            "--iptables=false", "--ip-masq=false", "--ip-forward=false",
            "--cgroup-parent", f"/docker-{self.name}",
            "--storage-driver", "overlay2",
        ]  # fmt: skip
        log = self.log.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"dockerd for {self.ip} exited ({self.proc.returncode}):\n"
                    + self.log.read_text()[-3000:]
                )
            if probe(self.endpoint, "tls", self.client_bundle, timeout=2, details=False)["ok"]:
                return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd for {self.ip} not ready in {wait}s; see {self.log}")

    def remember_network_bridges(self) -> None:
        """Note the Linux bridges of the engine's own networks (the spawner's workspace
        network, `br-<id>`), while it still answers: a killed engine leaves them behind,
        each holding a 172.x/16 route, and repeated runs would use up Docker's pools."""
        if not (self.proc and self.proc.poll() is None):
            return
        out = subprocess.run(
            ["docker", "-H", f"unix://{self.root / 'docker.sock'}", "network", "ls",
             "--no-trunc", "--filter", "driver=bridge", "--format", "{{.ID}} {{.Name}}"],
            capture_output=True, text=True, timeout=20, check=False,
        ).stdout  # fmt: skip
        for line in out.splitlines():
            net_id, _, name = line.partition(" ")
            if net_id and name != "bridge":
                self.network_bridges.add(f"br-{net_id[:12]}")

    def kill(self) -> None:
        """SIGKILL the engine by its PID (the failover tests' 'host dies')."""
        self.remember_network_bridges()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # dockerd's managed containerd outlives a SIGKILLed dockerd: stop it by its pidfile
        pidfile = self.root / "exec" / "containerd" / "containerd.pid"
        if pidfile.exists():
            with contextlib.suppress(ValueError, ProcessLookupError):
                pid = int(pidfile.read_text().strip())
                if pid_alive(pid):
                    os.kill(pid, signal.SIGTERM)
                    for _ in range(50):
                        if not pid_alive(pid):
                            break
                        time.sleep(0.1)

    def teardown(self) -> None:
        self.remember_network_bridges()
        self.stop()
        # The containers of a killed engine (a failover test's dead host) keep running,
        # orphaned, in the engine's cgroup parent.
        kill_cgroup(f"docker-{self.name}")
        for bridge in [self.bridge, *sorted(self.network_bridges)]:
            if bridge:
                _ip("link", "del", bridge, check=False)
        # overlay mounts of a killed engine may linger under data/
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.root))
        ]
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def can_run_engines() -> str | None:
    """None if this machine can run extra engines, else why not."""
    if os.geteuid() != 0:
        return "needs root (bridges and dockerd)"
    if not shutil.which("dockerd"):
        return "dockerd is missing: apt-get install -y docker.io"
    if not shutil.which("ip"):
        return "iproute2 is missing"
    return None


@contextlib.contextmanager
def start_engines(ca: CA, ips: list[str]) -> Iterator[list[Engine]]:
    engines: list[Engine] = []
    try:
        for ip in ips:
            root = Path(
                tempfile.mkdtemp(prefix=f"cy-placement-{ip.rsplit('.', 1)[1]}-", dir="/tmp")
            )
            engine = Engine(ip=ip, ca=ca, root=root)
            engines.append(engine)
            engine.setup()
            engine.start()
        yield engines
    finally:
        for engine in engines:
            engine.teardown()


async def register(api: Any, engines: list[Engine], **extra: Any) -> None:
    """Register every engine (with its TLS bundle) through the service API, `extra` added."""
    for engine in engines:
        body = {
            "name": engine.name,
            "endpoint": engine.endpoint,
            "credential": engine.client_bundle,
            **extra,
        }
        status, answer = await api("POST", "servers", body=body)
        assert status == 201, answer


def fake_spawner(user: str, groups: tuple[str, ...] = ()) -> SimpleNamespace:
    """What `RegistryHostProvider` reads of a spawner: user name and groups, server name, memory."""
    return SimpleNamespace(
        user=SimpleNamespace(name=user, groups=[SimpleNamespace(name=g) for g in groups]),
        name="",
        mem_limit=None,
    )
