"""`test` for a host: connect with its stored credential and report what the engine says.

Blocking (docker-py); callers run it in an executor. Never raises for connection problems:
the result says precisely what failed, because that sentence is what an admin acts on.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import requests
from docker.errors import APIError, DockerException

from .connect import HostClient, HostKeyChanged, SSHTunnelError


def describe_error(exc: BaseException) -> str:
    """Turn a requests/urllib3/ssl chain into one sentence naming the real cause."""
    chain: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(chain) < 20:
        e = todo.pop(0)
        if any(e is c for c in chain):
            continue
        chain.append(e)
        linked = [e.__cause__, e.__context__, getattr(e, "reason", None)]
        linked += [a for a in e.args if isinstance(a, BaseException)]
        todo += [x for x in linked if isinstance(x, BaseException)]
    text = " ".join(str(e) for e in chain)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS: the engine's certificate failed verification ({e.verify_message})"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS: the engine's certificate failed verification against the stored CA"
    for marker, sentence in (
        ("KEY_VALUES_MISMATCH", "TLS: the stored client certificate and key do not match"),
        ("tlsv13 alert certificate required", "TLS: the engine requires a client certificate"),
        ("certificate required", "TLS: the engine requires a client certificate"),
        ("unknown ca", "TLS: the engine does not trust our client certificate (unknown CA)"),
        ("bad certificate", "TLS: the engine rejected our client certificate"),
        ("WRONG_VERSION_NUMBER", "TLS: the endpoint does not speak TLS (plain HTTP port?)"),
        ("Connection refused", "connection refused (is the engine running and listening?)"),
        ("timed out", "timed out"),
        ("No such file or directory", "socket not found"),
        ("Name or service not known", "host name does not resolve"),
    ):
        if marker.lower() in text.lower():
            return f"{sentence}: {type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}"


def probe(
    endpoint: str,
    kind: str | None,
    secret: dict[str, Any] | None,
    timeout: float = 5.0,
    details: bool = True,
) -> dict[str, Any]:
    """Ping the engine; with `details`, also report version, CPU, memory, disk, containers."""
    result: dict[str, Any] = {"ok": False, "at": time.time()}
    try:
        with HostClient(endpoint, kind, secret, timeout=timeout) as client:
            t0 = time.perf_counter()
            client.api.ping()
            result["latency_ms"] = round((time.perf_counter() - t0) * 1000, 2)
            if details:
                info = client.api.info()
                version = client.api.version()
                result.update(
                    version=version.get("Version"),
                    api_version=version.get("ApiVersion"),
                    os=info.get("OperatingSystem"),
                    cpus=info.get("NCPU"),
                    mem_total=info.get("MemTotal"),
                    containers=info.get("Containers"),
                    containers_running=info.get("ContainersRunning"),
                    storage_driver=info.get("Driver"),
                    docker_root=info.get("DockerRootDir"),
                )
                try:
                    df = client.api.df()
                    result["disk_used"] = int(df.get("LayersSize") or 0) + sum(
                        int(v.get("UsageData", {}).get("Size", 0) or 0)
                        for v in df.get("Volumes") or []
                    )
                except (APIError, requests.RequestException):
                    result["disk_used"] = None
            result["ok"] = True
    except HostKeyChanged as e:
        result["error"] = str(e)
        result["host_key_changed"] = True
    except SSHTunnelError as e:
        result["error"] = str(e)
    except (DockerException, requests.RequestException, OSError, ValueError) as e:
        result["error"] = describe_error(e)
    return result
