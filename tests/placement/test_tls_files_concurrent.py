"""A host's TLS files are written once per provider, by whichever spawn needs them first; many
spawns for the same fresh host at once (the load test's 50 simultaneous starts) must all get a
working client, and none may fail on another writer's temporary file."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from codeyard.placement.hosts import DockerHost
from codeyard.placement.provider import RegistryHostProvider
from codeyard.placement.registry import Registry
from codeyard.spawner.clients import make_client

WRITERS = 16


def test_concurrent_gets_of_a_fresh_tls_host_all_work(
    registry: Registry,
    engines,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    engine = engines[0]
    registry.add_server(
        {"name": engine.name, "endpoint": engine.endpoint, "credential": engine.client_bundle}
    )
    runtime = tmp_path / "rt"
    provider = RegistryHostProvider(runtime_dir=str(runtime))
    provider.registry = registry
    start = threading.Barrier(WRITERS)

    def get() -> DockerHost:
        start.wait()
        return provider.get(engine.name)

    with ThreadPoolExecutor(WRITERS) as pool:
        hosts = list(pool.map(lambda _: get(), range(WRITERS)))

    assert {h.name for h in hosts} == {engine.name}
    tls = hosts[0].tls
    assert tls is not None
    bundle = engine.client_bundle
    assert Path(tls.ca_cert).read_text() == bundle["ca"]
    assert Path(tls.client_cert).read_text() == bundle["cert"]
    assert Path(tls.client_key).read_text() == bundle["key"]
    assert Path(tls.client_key).stat().st_mode & 0o077 == 0
    # No writer's temporary file is left behind, and every host's client reaches the engine.
    assert not [p.name for p in runtime.rglob("*.tmp")]
    assert make_client(hosts[-1]).info()["DockerRootDir"].startswith(str(engine.root))
