"""`test` against real engines: what it reports, and the precise connection errors."""

from __future__ import annotations

import os
import ssl
import urllib.error
import urllib.request

import pytest
from placement_pki import CA

from codeyard.placement.probe import probe
from codeyard.placement.registry import Registry


def test_probe_reports_engine_facts(registry: Registry, engines) -> None:  # type: ignore[no-untyped-def]
    for engine in engines:
        registry.add_server(
            {"name": engine.name, "endpoint": engine.endpoint, "credential": engine.client_bundle}
        )
        endpoint, kind, secret = registry.connection(engine.name)
        result = probe(endpoint, kind, secret)
        assert result["ok"], result
        assert result["version"] and result["api_version"]
        assert result["cpus"] >= 1 and result["mem_total"] > 0
        assert result["containers_running"] == 0
        assert 0 < result["latency_ms"] < 2000
        assert result["storage_driver"] == "overlay2"
        assert result["disk_used"] is not None


def test_client_without_certificate_is_refused(engines) -> None:  # type: ignore[no-untyped-def]
    engine = engines[0]
    ctx = ssl.create_default_context(cadata=engine.ca.pem)
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"https://{engine.ip}:{engine.port}/_ping", context=ctx, timeout=5)


def test_certificate_from_another_ca_gives_a_clear_error(engines) -> None:  # type: ignore[no-untyped-def]
    engine = engines[0]
    stranger = CA("not-the-engines-ca")
    result = probe(engine.endpoint, "tls", stranger.bundle(), timeout=5)
    assert not result["ok"]
    assert result["error"].startswith("TLS: the engine's certificate failed verification")

    foreign = stranger.client()
    foreign_client = {**engine.client_bundle, "cert": foreign.cert, "key": foreign.key}
    result = probe(engine.endpoint, "tls", foreign_client, timeout=5)
    assert result["error"].startswith("TLS: the engine rejected our client certificate")

    mismatched = {**engine.client_bundle, "cert": foreign.cert}
    result = probe(engine.endpoint, "tls", mismatched, timeout=5)
    assert result["error"].startswith("TLS: the stored client certificate and key do not match")


def test_refused_port_gives_a_clear_error(engines) -> None:  # type: ignore[no-untyped-def]
    engine = engines[0]
    result = probe(f"tcp://{engine.ip}:1", "tls", engine.client_bundle, timeout=5)
    assert result["error"].startswith("connection refused"), result["error"]


def test_client_ignores_requests_ca_bundle_env(engines, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    engine = engines[1]
    with engine.client() as client:
        assert client.api.ping()
        tls_dir = client._dir
        assert tls_dir is not None
    assert not os.path.exists(tls_dir), "PEM files are removed with the client"
