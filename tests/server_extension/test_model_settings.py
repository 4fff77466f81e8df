"""The panel's per-request settings (max_tokens, context_lines), the model name in usage, and
`GET codeyard/api/status`, against a real jupyter-server, the real gateway and real vLLM.

The gateway-down cases point the server at a closed loopback port: a real refused
connection, not a mock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jpconfig import closed_port

from codeyard.server_extension.llm.context import ContextBuilder
from codeyard.server_extension.llm.prompt import render_context
from codeyard.server_extension.llm.tokens import TokenCounter
from codeyard.server_extension.paths import WorkspacePaths

MAX_TOKENS_LIMIT = 300
MAX_CONTEXT_LINES = 30

# 30 numbered filler lines, the selection (31-32), then 30 more.
SOURCE = (
    "".join(f"v{i} = {i}\n" for i in range(1, 31))
    + "def double(x):\n    return 2 * x\n"
    + "".join(f"w{i} = {i}\n" for i in range(1, 31))
)
SELECTION = {"path": "lines.py", "start_line": 31, "end_line": 32}


@pytest.fixture
def jp_server_config(model_stack: dict[str, str]) -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"codeyard.server_extension": True},
            "allow_unauthenticated_access": False,
        },
        "CodeyardLLM": {
            "url": model_stack["url"],
            "token": model_stack["token"],
            "explain_max_tokens": 48,
            "explain_temperature": 0.0,
            "rewrite_max_tokens": 64,
            "max_tokens_limit": MAX_TOKENS_LIMIT,
            "max_context_lines": MAX_CONTEXT_LINES,
            "surrounding_lines": 20,
        },
    }


@pytest.fixture
def lines_py(workspace: Path) -> Path:
    target = workspace / "lines.py"
    target.write_text(SOURCE)
    return target


# ---- max_tokens ---------------------------------------------------------------------------


async def test_explain_max_tokens_1_gives_at_most_one_token_and_names_the_model(
    api: Any, lines_py: Path
) -> None:
    status, body = await api("explain", body={**SELECTION, "max_tokens": 1})
    assert status == 200, body
    usage = body["usage"]
    assert usage["completion_tokens"] <= 1
    assert usage["max_tokens"] == 1
    assert usage["finish_reason"] == "length"
    assert usage["model"] == "smollm2"  # vLLM's served name, relayed by the gateway

    # Without max_tokens the server's own default (explain_max_tokens=48) applies.
    status, body = await api("explain", body={**SELECTION})
    assert status == 200, body
    assert body["usage"]["max_tokens"] == 48
    assert 1 < body["usage"]["completion_tokens"] <= 48


async def test_streamed_explain_honours_max_tokens_too(jp_fetch: Any, lines_py: Path) -> None:
    chunks: list[bytes] = []
    resp = await jp_fetch(
        "codeyard",
        "api",
        "explain",
        method="POST",
        body=json.dumps({**SELECTION, "max_tokens": 2}),
        headers={"Accept": "text/event-stream"},
        streaming_callback=chunks.append,
        request_timeout=180,
    )
    assert resp.code == 200
    events = [
        json.loads(line[5:])
        for line in b"".join(chunks).decode().splitlines()
        if line.startswith("data:") and line[5:].strip()
    ]
    usage = events[-1]["usage"]
    assert events[-1]["done"] is True
    assert usage["completion_tokens"] <= 2 and usage["max_tokens"] == 2
    assert usage["model"] == "smollm2"


async def test_rewrite_max_tokens_1_is_honoured(api: Any, lines_py: Path) -> None:
    status, body = await api(
        "rewrite", body={**SELECTION, "instruction": "Add a docstring.", "max_tokens": 1}
    )
    # One token is rarely usable code: then 422 says the answer was cut off, with usage.
    if status == 422:
        assert body["error"] == "answer_truncated", body
        assert "max_tokens=1" in body["message"]
    else:
        assert status == 200, body
    assert body["usage"]["completion_tokens"] <= 1
    assert body["usage"]["max_tokens"] == 1
    assert body["usage"]["model"] == "smollm2"


@pytest.mark.parametrize("endpoint", ["explain", "rewrite"])
@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"max_tokens": 0}, "max_tokens must be between 1 and 300"),
        ({"max_tokens": MAX_TOKENS_LIMIT + 1}, "max_tokens must be between 1 and 300"),
        ({"max_tokens": "64"}, "max_tokens must be an integer between 1 and 300, not str"),
        ({"max_tokens": 1.5}, "max_tokens must be an integer between 1 and 300, not float"),
        ({"max_tokens": True}, "max_tokens must be an integer between 1 and 300, not bool"),
        ({"context_lines": -1}, "context_lines must be between 0 and 30"),
        ({"context_lines": MAX_CONTEXT_LINES + 1}, "context_lines must be between 0 and 30"),
        ({"context_lines": [3]}, "context_lines must be an integer between 0 and 30, not list"),
    ],
)
async def test_out_of_range_or_wrong_type_gives_400_naming_the_field(
    api: Any, lines_py: Path, endpoint: str, extra: dict[str, Any], words: str
) -> None:
    body = {**SELECTION, **extra}
    if endpoint == "rewrite":
        body["instruction"] = "Add a docstring."
    status, answer = await api(endpoint, body=body)
    assert status == 400, answer
    assert answer["error"] == "bad_request"
    assert words in answer["message"], answer
    assert answer["field"] == next(iter(extra))


# ---- context_lines ------------------------------------------------------------------------


def test_builder_shows_exactly_the_asked_lines_around_the_selection(tmp_path: Path) -> None:
    (tmp_path / "lines.py").write_text(SOURCE)
    builder = ContextBuilder(WorkspacePaths(str(tmp_path)), TokenCounter(None), budget=4000)
    shown = {}
    for n in (0, 3, 25):
        ctx = builder.build("lines.py", SOURCE, 31, 32, surrounding_lines=n)
        assert ctx.surrounding == n and not ctx.dropped
        shown[n] = render_context(ctx)
        before = ctx.before.splitlines()
        after = ctx.after.splitlines()
        assert len(before) == n and len(after) == n
        if n:
            assert before[-1] == "v30 = 30" and before[0] == f"v{31 - n} = {31 - n}"
            assert after[0] == "w1 = 1" and after[-1] == f"w{n} = {n}"
    assert "v30 = 30" not in shown[0] and "w1 = 1" not in shown[0]
    assert "v28 = 28" in shown[3] and "v27 = 27" not in shown[3]
    # None keeps the builder's default.
    assert builder.build("lines.py", SOURCE, 31, 32).surrounding == builder.surrounding_lines


def test_builder_still_shrinks_asked_lines_to_fit_the_budget(tmp_path: Path) -> None:
    builder = ContextBuilder(WorkspacePaths(str(tmp_path)), TokenCounter(None), budget=60)
    ctx = builder.build("lines.py", SOURCE, 31, 32, surrounding_lines=25)
    assert ctx.surrounding < 25
    assert f"surrounding lines reduced to {ctx.surrounding}" in ctx.dropped


async def test_context_lines_changes_what_the_model_is_sent(api: Any, lines_py: Path) -> None:
    prompt_tokens = {}
    for n in (0, 25):
        status, body = await api("explain", body={**SELECTION, "context_lines": n, "max_tokens": 1})
        assert status == 200, body
        assert body["usage"]["context_lines"] == n
        prompt_tokens[n] = body["usage"]["prompt_tokens"]
    # 50 more lines of `vN = N` in the prompt: many more tokens, counted by vLLM itself.
    assert prompt_tokens[25] > prompt_tokens[0] + 100, prompt_tokens

    status, body = await api(
        "rewrite",
        body={**SELECTION, "instruction": "Add a docstring.", "context_lines": 0, "max_tokens": 1},
    )
    assert status in (200, 422), body
    assert body["usage"]["context_lines"] == 0


# ---- GET status -----------------------------------------------------------------------------


async def test_status_names_the_model_and_measures_the_gateway(api: Any) -> None:
    status, body = await api("status")
    assert status == 200, body
    assert body["healthy"] is True
    assert body["model"] == "smollm2"
    assert 0 < body["latency_ms"] < 3000


async def test_status_with_the_gateway_unreachable_is_a_clear_503(
    api: Any, jp_serverapp: Any
) -> None:
    llm = jp_serverapp.web_app.settings["codeyard_explainer"].llm
    llm.url = f"http://127.0.0.1:{closed_port()}"  # bound, never listening: refused
    status, body = await api("status")
    assert status == 503, body
    assert body["healthy"] is False
    assert body["error"] == "llm_unavailable"
    assert "not reachable" in body["message"] and llm.url in body["message"]
    assert body["model"] == "smollm2"
    assert body["latency_ms"] < 3000  # a refused connection is reported at once


async def test_status_when_the_gateway_does_not_serve_the_model(
    api: Any, jp_serverapp: Any
) -> None:
    llm = jp_serverapp.web_app.settings["codeyard_explainer"].llm
    llm.model = "no-such-model"
    status, body = await api("status")
    assert status == 503, body
    assert body["error"] == "llm_model_missing"
    assert "'no-such-model'" in body["message"] and "smollm2" in body["message"]


async def test_status_with_a_token_the_gateway_refuses(api: Any, jp_serverapp: Any) -> None:
    llm = jp_serverapp.web_app.settings["codeyard_explainer"].llm
    llm.token = "not-a-real-token"
    status, body = await api("status")
    assert status == 503, body
    assert body["healthy"] is False and body["error"] == "llm_auth"
    assert "refused this workspace's token" in body["message"]


async def test_status_needs_authentication(without_token: Any) -> None:
    assert (await without_token("status")).code == 403
