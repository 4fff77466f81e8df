"""An OpenSSH server on a loopback address with key authentication, for `ssh://` hosts.

Debian's openssh-server is not installed here, and installing it would start a system sshd
on port 22. So the fixture downloads the package (and libwrap0) with `apt-get download`,
unpacks it into a cache folder, and runs that `sshd` in the foreground on 127.0.0.N with its
own config: keys only, one authorized key, stream-local forwarding on, stopped by its PID.
Like the package's postinst, it creates the `sshd` privilege-separation user if missing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

CACHE = (
    Path(os.environ.get("CODEYARD_CACHE", Path.home() / ".cache" / "codeyard")) / "sshd-bookworm"
)


def _ensure_sshd() -> tuple[Path, str]:
    sshd = CACHE / "usr" / "sbin" / "sshd"
    libs = str(CACHE / "usr" / "lib" / "x86_64-linux-gnu")
    if not sshd.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                ["apt-get", "download", "openssh-server", "libwrap0"],
                cwd=tmp,
                check=True,
                capture_output=True,
            )
            for deb in Path(tmp).glob("*.deb"):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(CACHE)], check=True)
    return sshd, libs


def _ensure_privsep() -> None:
    """What the package's postinst would do: the `sshd` user and its empty /run/sshd."""
    import pwd

    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    try:
        pwd.getpwnam("sshd")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/run/sshd",
             "--shell", "/usr/sbin/nologin", "sshd"],
            check=True,
        )  # fmt: skip


def _keypair() -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


@dataclass
class SSHServer:
    ip: str
    root: Path
    port: int = 0
    client_key: str = ""
    known_hosts: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def endpoint(self, remote_socket: str) -> str:
        return f"ssh://root@{self.ip}:{self.port}{remote_socket}"

    def start(self) -> None:
        _ensure_sshd()
        _ensure_privsep()
        host_private, host_public = _keypair()
        self.client_key, client_public = _keypair()
        (self.root / "host_key").write_text(host_private)
        (self.root / "host_key").chmod(0o600)
        (self.root / "authorized_keys").write_text(client_public + "\n")
        with socket.socket() as s:
            s.bind((self.ip, 0))
            self.port = s.getsockname()[1]
        self.known_hosts = f"[{self.ip}]:{self.port} {host_public}\n"
        (self.root / "sshd_config").write_text(
            f"""ListenAddress {self.ip}:{self.port}
HostKey {self.root}/host_key
PidFile {self.root}/sshd.pid
AuthorizedKeysFile {self.root}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
AllowTcpForwarding local
X11Forwarding no
PermitTTY no
"""
        )
        self._run()

    def _run(self) -> None:
        sshd, libs = _ensure_sshd()
        log = (self.root / "sshd.log").open("ab")
        self.proc = subprocess.Popen(
            [str(sshd), "-D", "-e", "-f", str(self.root / "sshd_config")],
            env={**os.environ, "LD_LIBRARY_PATH": libs},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sshd exited:\n" + (self.root / "sshd.log").read_text()[-2000:])
            try:
                with socket.create_connection((self.ip, self.port), timeout=0.5) as c:
                    if c.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sshd did not answer")

    def restart_with_new_host_key(self) -> None:
        """Give the server a new host key (a reinstalled or impostor host) on the same
        address, port and client key; `known_hosts` then names the new key."""
        self.stop()
        host_private, host_public = _keypair()
        (self.root / "host_key").write_text(host_private)
        (self.root / "host_key").chmod(0o600)
        self.known_hosts = f"[{self.ip}]:{self.port} {host_public}\n"
        self._run()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
