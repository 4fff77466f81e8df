"""Docker clients for registered hosts, built from their decrypted credentials.

Every client pins `version="1.41"` (`"auto"` would call the engine inside the constructor)
and sets `trust_env = False`: the environment's `REQUESTS_CA_BUNDLE` would otherwise replace
the host's own CA and every TLS connection would fail verification.

docker-py reads TLS material from files, so a client owns a private directory (mode 0700)
holding the PEM files for as long as it lives; `close()` removes it.

`ssh://user@host[:port][/remote/docker.sock]` hosts go through an `SSHTunnel`: OpenSSH's
client forwards a local unix socket to the engine's socket on the remote machine, using the
stored key only (`IdentitiesOnly`, `BatchMode`). docker-py's own ssh transports cannot take
a stored key (they read `~/.ssh/config`), and a forwarded socket also serves the spawner's
long-lived clients as a plain `unix://` URL. The remote sshd needs `AllowStreamLocalForwarding`
and `AllowTcpForwarding` `local` or `yes` (sshd gates socket forwarding on the latter too).

The host key is pinned: every tunnel runs with `StrictHostKeyChecking=yes` and a known_hosts
file holding only the key stored at registration (`known_hosts`, given by the admin or
scanned with `scan_host_key` and confirmed by its fingerprint). A host without a pinned key
is refused, never trusted on first sight, and a host presenting another key fails with
`HostKeyChanged`, which the health monitor turns into "down: host key changed".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

import docker
from docker.tls import TLSConfig

API_VERSION = "1.41"
DEFAULT_REMOTE_SOCKET = "/var/run/docker.sock"


def _private_dir(runtime_dir: str | None) -> str:
    path = tempfile.mkdtemp(prefix="codeyard-host-", dir=runtime_dir)
    os.chmod(path, 0o700)
    return path


def _write_private(path: str, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")
    return path


class SSHTunnelError(ConnectionError):
    pass


class HostKeyChanged(SSHTunnelError):
    """The host did not present its pinned key: a new machine, a reinstall, or an attacker."""


class NoPinnedHostKey(SSHTunnelError):
    """The stored credential has no host key to check the host against."""


#: Key types `scan_host_key` asks for, most preferred first; the first one found is pinned.
SCAN_KEY_TYPES = ("ed25519", "ecdsa", "rsa")


def scan_host_key(endpoint: str, timeout: float = 10.0) -> str:
    """The host's key as one known_hosts line (`ssh-keyscan`), for an admin to confirm.

    Only its fingerprint is worth anything: the scan itself is unauthenticated, so the admin
    compares it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host.
    """
    parts = urlsplit(endpoint)
    if parts.scheme != "ssh" or not parts.hostname:
        raise ValueError(f"{endpoint}: not an ssh:// endpoint")
    if parts.hostname.startswith("-"):
        raise ValueError(f"{endpoint}: bad host name")
    cmd = ["ssh-keyscan", "-T", str(max(1, int(timeout))), "-t", ",".join(SCAN_KEY_TYPES)]
    if parts.port:
        cmd += ["-p", str(parts.port)]
    cmd += ["--", parts.hostname]
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout + 5, check=False
        ).stdout
    except subprocess.TimeoutExpired:
        raise SSHTunnelError(f"ssh: no host key from {parts.hostname} in {timeout:.0f}s") from None
    lines = [line for line in out.splitlines() if line and not line.startswith("#")]
    for kind in SCAN_KEY_TYPES:
        for line in lines:
            fields = line.split()
            if len(fields) >= 3 and kind in fields[1]:
                return f"{fields[0]} {fields[1]} {fields[2]}\n"
    raise SSHTunnelError(f"ssh: {parts.hostname} sent no host key (is sshd listening there?)")


class SSHTunnel:
    """`ssh -N -L <local.sock>:<remote docker.sock>` with the stored key; one per host.

    The secret is `{"key": <private key>, "known_hosts": <the pinned host key line>}`; the
    host key is always checked strictly against it, and a secret without one is refused.
    """

    def __init__(
        self,
        endpoint: str,
        secret: dict[str, Any],
        runtime_dir: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(endpoint)
        if not parts.hostname:
            raise ValueError(f"{endpoint}: no host")
        self.endpoint = endpoint
        pinned = secret.get("known_hosts", "")
        if not pinned.strip():
            raise NoPinnedHostKey(
                "ssh: no pinned host key for this host; store its known_hosts line (or"
                " confirm the fingerprint the registration page shows) before it is used"
            )
        self.dir = _private_dir(runtime_dir)
        self.socket = os.path.join(self.dir, "docker.sock")
        key = _write_private(os.path.join(self.dir, "id_key"), secret["key"])
        known = _write_private(os.path.join(self.dir, "known_hosts"), pinned)
        remote = parts.path if parts.path and parts.path != "/" else DEFAULT_REMOTE_SOCKET
        cmd = [
            "ssh", "-N", "-T",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={known}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UpdateHostKeys=no",
            "-o", "ExitOnForwardFailure=yes",
            "-o", "StreamLocalBindUnlink=yes",
            "-o", "ServerAliveInterval=15",
            "-o", f"ConnectTimeout={max(1, int(timeout))}",
            "-F", "/dev/null",
            "-i", key,
            "-L", f"{self.socket}:{remote}",
        ]  # fmt: skip
        if parts.port:
            cmd += ["-p", str(parts.port)]
        if parts.username:
            cmd += ["-l", parts.username]
        cmd += ["--", parts.hostname]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None:
                err = (
                    self.proc.stderr.read().decode(errors="replace").strip()
                    if self.proc.stderr
                    else ""
                )
                self.close()
                last = err.splitlines()[-1] if err else "exited"
                if "Host key verification failed" in err:
                    raise HostKeyChanged(
                        f"ssh: host key changed: {last} (the host did not present the"
                        " pinned key; check the host, then store its new key)"
                    )
                raise SSHTunnelError(f"ssh: {last}")
            if time.monotonic() > deadline:
                self.close()
                raise SSHTunnelError("ssh: timed out opening the tunnel")
            time.sleep(0.02)

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    def alive(self) -> bool:
        return self.proc.poll() is None and os.path.exists(self.socket)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class HostClient:
    """A `docker.APIClient` for one host plus the files (or tunnel) its credential needs."""

    def __init__(
        self,
        endpoint: str,
        kind: str | None,
        secret: dict[str, Any] | None,
        timeout: float = 10.0,
        runtime_dir: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._dir: str | None = None
        self._tunnel: SSHTunnel | None = None
        scheme = urlsplit(endpoint).scheme
        tls: TLSConfig | bool = False
        if scheme == "tcp" and kind == "tls" and secret:
            self._dir = _private_dir(runtime_dir)
            paths = {
                part: _write_private(os.path.join(self._dir, f"{part}.pem"), secret[part])
                for part in ("ca", "cert", "key")
            }
            tls = TLSConfig(
                client_cert=(paths["cert"], paths["key"]), ca_cert=paths["ca"], verify=True
            )
            base_url = endpoint.replace("tcp://", "https://", 1)
        elif scheme == "ssh":
            if kind != "ssh" or not secret:
                raise ValueError(f"{endpoint}: an ssh:// host needs an SSH credential")
            self._tunnel = SSHTunnel(endpoint, secret, runtime_dir, timeout)
            base_url = self._tunnel.base_url
        else:
            base_url = endpoint
        self.api = docker.APIClient(
            base_url=base_url, version=API_VERSION, tls=tls, timeout=timeout
        )
        self.api.trust_env = False
        if kind == "token" and secret:
            self.api.headers["Authorization"] = f"Bearer {secret['token']}"

    def close(self) -> None:
        try:
            self.api.close()
        finally:
            if self._tunnel:
                self._tunnel.close()
                self._tunnel = None
            if self._dir:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def __enter__(self) -> HostClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
