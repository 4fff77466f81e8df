"""Prometheus metrics of the workspace API at the server's own `/metrics`: requests, errors and
latency per endpoint, and patch sizes and outcomes, scraped after real requests. Also the
audit record each model call leaves (the usage page counts explains and rewrites from it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def create(path: str, lines: list[str]) -> str:
    body = "".join(f"+{line}\n" for line in lines)
    return f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n{body}"


async def scrape(jp_fetch: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await jp_fetch("metrics", method="GET")
    assert resp.code == 200
    samples = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


async def test_requests_errors_latency_and_patches_are_counted(api, jp_fetch) -> None:
    before = await scrape(jp_fetch)
    assert (await api("tree"))[0] == 200
    status, body = await api("patch/apply", body={"diff": create("m.txt", ["a", "b", "c"])})
    assert status == 200, body
    assert (await api(f"patch/{body['patch_id']}/revert", body={}))[0] == 200
    assert (await api("patch/apply", body={"diff": "not a diff"}))[0] == 400
    assert (await api("files", params={"path": "nowhere.txt"}))[0] == 404
    after = await scrape(jp_fetch)

    def grew(name: str, by: float = 1, **labels: str) -> None:
        delta = value(after, name, **labels) - value(before, name, **labels)
        assert delta == by, (name, labels, delta)

    grew("codeyard_server_requests_total", endpoint="tree", method="GET", status="200")
    grew("codeyard_server_requests_total", endpoint="patch_apply", status="200")
    grew("codeyard_server_requests_total", endpoint="patch_apply", status="400")
    grew("codeyard_server_requests_total", endpoint="patch_revert", status="200")
    grew("codeyard_server_errors_total", endpoint="patch_apply")
    grew("codeyard_server_errors_total", endpoint="files", code="not_found")
    grew("codeyard_server_request_seconds_count", 2, endpoint="patch_apply")
    assert value(after, "codeyard_server_request_seconds_sum", endpoint="patch_apply") > value(
        before, "codeyard_server_request_seconds_sum", endpoint="patch_apply"
    )
    grew("codeyard_patch_outcomes_total", operation="apply", outcome="ok")
    grew("codeyard_patch_outcomes_total", operation="apply", outcome="refused")
    grew("codeyard_patch_outcomes_total", operation="revert", outcome="ok")
    grew("codeyard_patch_bytes_count", 2, kind="file")
    grew("codeyard_patch_changed_lines_sum", 3 + 0, kind="file")
    # a 3-line patch and a 1-line text: 3 changed lines land in the bucket le=5, not le=2
    grew("codeyard_patch_changed_lines_bucket", 1, kind="file", le="2.0")
    grew("codeyard_patch_changed_lines_bucket", 2, kind="file", le="5.0")


async def test_labels_stay_bounded_whatever_the_urls(api, jp_fetch) -> None:
    for n in range(5):
        await api(f"patch/no-such-patch-{n}/revert", body={})
    text = (await jp_fetch("metrics", method="GET")).body.decode()
    assert "no-such-patch" not in text
    assert re.search(r'codeyard_server_requests_total\{endpoint="patch_revert"', text)


async def test_a_model_call_leaves_a_hash_free_audit_record(api, workspace: Path) -> None:
    secret = "explain-marker-9143"
    (workspace / "e.py").write_text(f"x = '{secret}'\n")
    status, _ = await api("explain", body={"path": "e.py", "start_line": 1, "end_line": 1})
    assert status >= 400  # this server has no gateway: the call is refused, and recorded
    answer, body = await api("audit", params={"limit": 5})
    assert answer == 200 and body["chain_ok"] is True
    record = next(r for r in body["records"] if r["action"] == "llm.explain")
    assert record["paths"] == ["e.py"]
    assert record["status"] == status and record["outcome"] == "error"
    assert secret not in (workspace / ".codeyard" / "audit.jsonl").read_text()
