"""Docker clients for registered hosts, built from their decrypted credentials.

Every client pins `version="1.41"` (`"auto"` would call the engine inside the constructor)
and sets `trust_env = False`: the environment's `REQUESTS_CA_BUNDLE` would otherwise replace
the host's own CA and every TLS connection would fail verification.

docker-py reads TLS material from files, so a client owns a private directory (mode 0700)
holding the PEM files for as long as it lives; `close()` removes it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any
from urllib.parse import urlsplit

import docker
from docker.tls import TLSConfig

API_VERSION = "1.41"


class HostClient:
    """A `docker.APIClient` for one host plus the files its credential needs."""

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
        scheme = urlsplit(endpoint).scheme
        tls: TLSConfig | bool = False
        if scheme == "tcp" and kind == "tls" and secret:
            self._dir = tempfile.mkdtemp(prefix="codeyard-host-", dir=runtime_dir)
            os.chmod(self._dir, 0o700)
            paths = {}
            for part in ("ca", "cert", "key"):
                path = os.path.join(self._dir, f"{part}.pem")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(secret[part])
                paths[part] = path
            tls = TLSConfig(
                client_cert=(paths["cert"], paths["key"]), ca_cert=paths["ca"], verify=True
            )
            base_url = endpoint.replace("tcp://", "https://", 1)
        elif scheme == "ssh":
            # Registered and stored, but not connectable yet: docker-py's ssh transports need
            # paramiko or the user's ~/.ssh/config, neither of which takes a stored key.
            raise NotImplementedError(f"{endpoint}: ssh:// connections are not implemented yet")
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
            if self._dir:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def __enter__(self) -> HostClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
