"""One Docker API client and one worker pool per Docker host, shared by all spawners.

DockerSpawner keeps a single client and a single-thread executor on the class, so every
Docker call of every user on every host queues behind one thread. Here both are cached per
host (by URL and TLS material, like kubespawner's `shared_client`), so a slow engine only
slows its own workspaces and concurrent spawns on one engine run in parallel.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
from docker.tls import TLSConfig

from codeyard.placement.hosts import DockerHost

# Pinned instead of "auto": "auto" calls /version inside APIClient.__init__, a blocking
# round trip on the event loop for every new host. 1.41 is Docker 20.10's API.
DOCKER_API_VERSION = "1.41"

_lock = threading.Lock()
_clients: dict[tuple[Any, ...], docker.APIClient] = {}
_executors: dict[tuple[Any, ...], ThreadPoolExecutor] = {}
_status_clients: dict[tuple[Any, ...], docker.APIClient] = {}
_status_executors: dict[tuple[Any, ...], ThreadPoolExecutor] = {}
#: Threads per host for status checks: a poll is one short call per running workspace.
STATUS_WORKERS = 4


def make_client(host: DockerHost, timeout: float = 60) -> docker.APIClient:
    """Build a client for `host` without touching the network."""
    tls: TLSConfig | bool = False
    if host.tls is not None:
        tls = TLSConfig(
            client_cert=(host.tls.client_cert, host.tls.client_key),
            ca_cert=host.tls.ca_cert,
            verify=True,
        )
    client = docker.APIClient(
        base_url=host.base_url, version=DOCKER_API_VERSION, tls=tls, timeout=timeout
    )
    # requests would let REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE replace our CA: ignore the env.
    client.trust_env = False
    return client


def client_for(host: DockerHost) -> docker.APIClient:
    """The shared client for `host` (created on first use)."""
    key = host.client_key
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = make_client(host)
        return client


def executor_for(host: DockerHost, max_workers: int) -> ThreadPoolExecutor:
    """The shared worker pool for `host`; `max_workers` applies when it is first created."""
    key = host.client_key
    with _lock:
        pool = _executors.get(key)
        if pool is None:
            pool = _executors[key] = ThreadPoolExecutor(
                max_workers=max_workers, thread_name_prefix=f"docker-{host.name}"
            )
        return pool


class EngineUnreachable(ConnectionError):
    """A host's engine did not answer a status check: refused, reset, or silent past the
    time limit. On a remote host this is what a dead machine looks like."""


def status_client_for(host: DockerHost, timeout: float) -> docker.APIClient:
    """The shared client for `host`'s status checks (poll, the status API).

    Separate from `client_for` because its time limit is short: a machine that died leaves
    a TCP endpoint that never answers, and the Hub must notice that within a bounded time,
    while a pull or a clone on the main client may legitimately take minutes. `timeout`
    applies when the client is first created (connect and each read).
    """
    key = host.client_key
    with _lock:
        client = _status_clients.get(key)
        if client is None:
            client = _status_clients[key] = make_client(host, timeout=timeout)
        return client


def status_executor_for(host: DockerHost) -> ThreadPoolExecutor:
    """A small worker pool for `host`'s status checks, apart from `executor_for`'s: a host
    whose main pool is busy with long calls (pulls, clones) must still answer polls in time,
    or a healthy workspace would be taken for dead."""
    key = host.client_key
    with _lock:
        pool = _status_executors.get(key)
        if pool is None:
            pool = _status_executors[key] = ThreadPoolExecutor(
                max_workers=STATUS_WORKERS, thread_name_prefix=f"docker-status-{host.name}"
            )
        return pool


def close_all() -> None:
    """Drop every cached client and pool (tests, Hub shutdown)."""
    with _lock:
        for client in (*_clients.values(), *_status_clients.values()):
            client.close()
        for pool in (*_executors.values(), *_status_executors.values()):
            pool.shutdown(wait=False)
        _clients.clear()
        _executors.clear()
        _status_clients.clear()
        _status_executors.clear()
