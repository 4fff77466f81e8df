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


class SSHTunnel:
    """`ssh -N -L <local.sock>:<remote docker.sock>` with the stored key; one per host.

    The secret is `{"key": <private key>, "known_hosts": <optional known_hosts lines>}`.
    With `known_hosts` the host key is checked strictly; without it the first key seen is
    trusted (`accept-new`) and pinned for this tunnel's life.
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
        self.dir = _private_dir(runtime_dir)
        self.socket = os.path.join(self.dir, "docker.sock")
        key = _write_private(os.path.join(self.dir, "id_key"), secret["key"])
        known = _write_private(os.path.join(self.dir, "known_hosts"), secret.get("known_hosts", ""))
        remote = parts.path if parts.path and parts.path != "/" else DEFAULT_REMOTE_SOCKET
        cmd = [
            "ssh", "-N", "-T",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={known}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=" + ("yes" if secret.get("known_hosts") else "accept-new"),
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
                raise SSHTunnelError(f"ssh: {err.splitlines()[-1] if err else 'exited'}")
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
