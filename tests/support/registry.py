"""A real image registry for the tests: Debian's `docker-registry`, started by the project's
own launcher (`images/bin/ensure-registry.sh`) in a temp state folder, on a free port.

One registry serves a whole test run: `tests/support/with-registry.sh CMD` (`python -m
support.registry CMD`) starts it, exports its description as `CODEYARD_TEST_REGISTRY` (JSON:
address, CA file, user, password), runs CMD and stops it; `make test` runs every suite under
it. A run started without it gets a registry of its own from `running_registry()`.

Like a site's registry it serves TLS with its own CA and requires a login (htpasswd), so the
bad-credentials path is real. It listens on an address of its own on a bridge interface this
module creates (10.97.X.1): tests talk only to loopback and to what they made, never to the
box's real interfaces. Namespace machines reach it through their gateway (they route
everything to this box, which owns the address); the launcher trusts the CA through
`/etc/docker/certs.d/<address>/ca.crt`, which every engine on
this box reads, the machines' engines included (their private mount namespaces share that
folder), and `--stop` removes exactly that entry again.

Only the standard library is imported, so the wrapper runs with any Python 3.11.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ENV = "CODEYARD_TEST_REGISTRY"
REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "images" / "bin" / "ensure-registry.sh"


@dataclass
class RegistryServer:
    """What a test needs to use the run's registry."""

    address: str  # host:port, as image references and certs.d name it
    ca_file: str  # the CA that signed its certificate
    username: str
    password: str
    state: str  # its state folder (CODEYARD_STATE of the launcher)

    def env(self) -> dict[str, str]:
        """The Hub's and push-image.sh's settings for this registry."""
        return {
            "CODEYARD_REGISTRY": self.address,
            "CODEYARD_REGISTRY_CA": self.ca_file,
            "CODEYARD_REGISTRY_USER": self.username,
            "CODEYARD_REGISTRY_PASSWORD": self.password,
        }


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@contextlib.contextmanager
def registry_address() -> Iterator[str]:
    """A bridge of its own (this kernel has no dummy links) holding a free 10.97.X.1/32 for
    the registry; removed afterwards."""
    used = _ip("-4", "-o", "addr", "show").stdout
    third = next(n for n in range(1, 255) if f" 10.97.{n}." not in used)
    link, address = f"cyreg{secrets.token_hex(3)}", f"10.97.{third}.1"
    _ip("link", "add", link, "type", "bridge")
    try:
        _ip("addr", "add", f"{address}/32", "dev", link)
        _ip("link", "set", link, "up")
        yield address
    finally:
        _ip("link", "del", link, check=False)


@contextlib.contextmanager
def start_registry() -> Iterator[RegistryServer]:
    """Start a registry in a temp state folder on an address of its own; stop it, untrust
    it and remove the folder and the address."""
    with registry_address() as host:
        yield from _started_registry(host)


def _started_registry(host: str) -> Iterator[RegistryServer]:
    state = tempfile.mkdtemp(prefix="codeyard-registry-")
    env = {
        **os.environ,
        "CODEYARD_STATE": state,
        "CODEYARD_REGISTRY_HOST": host,
        "CODEYARD_REGISTRY_PORT": str(_free_port(host)),
        "CODEYARD_REGISTRY_USER": "codeyard-test",
        "CODEYARD_REGISTRY_PASSWORD": secrets.token_hex(12),
    }
    try:
        out = subprocess.run(
            [str(LAUNCHER)], env=env, capture_output=True, text=True, check=False, timeout=180
        )
        if out.returncode != 0:
            raise RuntimeError(f"ensure-registry.sh failed ({out.returncode}):\n{out.stderr}")
        address = out.stdout.strip().splitlines()[-1].split()[-1]
        yield RegistryServer(
            address=address,
            ca_file=f"{state}/registry/ca.crt",
            username=env["CODEYARD_REGISTRY_USER"],
            password=env["CODEYARD_REGISTRY_PASSWORD"],
            state=state,
        )
    finally:
        subprocess.run(
            [str(LAUNCHER), "--stop"], env=env, capture_output=True, check=False, timeout=60
        )
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def running_registry() -> Iterator[RegistryServer]:
    """The run's registry (`CODEYARD_TEST_REGISTRY`) when a wrapper started one, else ours."""
    text = os.environ.get(ENV)
    if text:
        yield RegistryServer(**json.loads(text))
        return
    with start_registry() as server:
        yield server


def main(argv: list[str]) -> int:
    """`python -m support.registry CMD...`: run CMD with a registry described in
    CODEYARD_TEST_REGISTRY (reused when already set); return CMD's exit status."""
    if not argv:
        print("usage: with-registry.sh COMMAND [ARG...]", file=sys.stderr)
        return 2
    with running_registry() as server:
        print(f"registry on https://{server.address}", file=sys.stderr)
        proc = subprocess.Popen(argv, env={**os.environ, ENV: json.dumps(asdict(server))})
        try:
            return proc.wait()
        except KeyboardInterrupt:
            return proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
