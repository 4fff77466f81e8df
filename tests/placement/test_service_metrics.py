"""The placement service's Prometheus metrics, scraped after real requests through a real Hub:
requests, errors and latency per endpoint, and the workspaces placed on each host."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

pytestmark = pytest.mark.asyncio


async def scrape(service: Any, token: str | None) -> tuple[int, dict[Any, float]]:
    headers = {"Authorization": f"token {token}"} if token else {}
    resp = await AsyncHTTPClient().fetch(
        service.url + "metrics", headers=headers, raise_error=False, follow_redirects=False
    )
    if resp.code != 200:
        return resp.code, {}
    samples = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return resp.code, samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


async def test_requests_errors_latency_and_placements_per_host(  # type: ignore[no-untyped-def]
    api, service, hub_tokens, registry
) -> None:
    _, before = await scrape(service, hub_tokens["admin"])
    for name in ("mh1", "mh2"):
        status, _ = await api(
            "POST", "servers", body={"name": name, "endpoint": f"unix:///run/{name}.sock"}
        )
        assert status in (200, 201)
    registry.place("mia")
    registry.place("max")
    registry.place("moe")
    assert (await api("GET", "servers"))[0] == 200
    assert (await api("GET", "servers/no-such-host"))[0] == 404
    assert (await api("GET", "servers", token="dev"))[0] == 403
    status, after = await scrape(service, hub_tokens["admin"])
    assert status == 200

    def grew(name: str, by: float = 1, **labels: str) -> None:
        delta = value(after, name, **labels) - value(before, name, **labels)
        assert delta == by, (name, labels, delta)

    grew("codeyard_placement_requests_total", 2, endpoint="servers", method="POST")
    grew("codeyard_placement_requests_total", endpoint="servers", method="GET", status="200")
    grew("codeyard_placement_requests_total", endpoint="server", status="404")
    grew("codeyard_placement_errors_total", endpoint="server", status="404")
    grew("codeyard_placement_errors_total", endpoint="servers", status="403")
    grew("codeyard_placement_request_seconds_count", 4, endpoint="servers")
    placed = {labels: v for (n, labels), v in after.items() if n == "codeyard_placement_workspaces"}
    per_host: dict[str, float] = {}
    for labels, v in placed.items():
        server = dict(labels)["server"]
        per_host[server] = per_host.get(server, 0) + v
    assert sum(per_host.values()) == len(registry.list_placements()) >= 3
    assert set(per_host) <= {p["server"] or "-" for p in registry.list_placements()}
    assert {"mh1", "mh2"} <= set(per_host)
    # label values are the handlers', not the URL's
    assert not any("no-such-host" in str(k) for k in after)


async def test_metrics_need_the_admin_or_read_metrics_scope(service, hub_tokens) -> None:  # type: ignore[no-untyped-def]
    assert (await scrape(service, hub_tokens["dev"]))[0] == 403
    assert (await scrape(service, None))[0] == 403
