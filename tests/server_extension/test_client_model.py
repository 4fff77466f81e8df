"""`Workspace.explain`, `rewrite` and `complete` against the real server, model and gateway,
and the rewrite answer's `finish_reason`, `raw` and `checks` from the real model.

SmolLM2 is weak: the assertions are about the answer's shape and what the server did with
it, never the wording. `raw` is the user's code as the model rewrote it: it goes back to the
same user in the body and must not reach any log, which the last test checks at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jpconfig import model_llm, server_config

from codeyard.client import CodeyardAPIError, Workspace

SOURCE = """def area(width, height):
    return width*height


def perimeter(width, height):
    return 2*(width+height)
"""


@pytest.fixture
def jp_server_config(model_stack: dict[str, str]) -> dict[str, Any]:
    return server_config(
        CodeyardLLM=model_llm(
            model_stack,
            explain_max_tokens=48,
            explain_temperature=0.0,
            rewrite_max_tokens=96,
            max_tokens_limit=400,
        ),
    )


@pytest.fixture
def ws(
    jp_serverapp: Any, http_server_client: Any, jp_http_port: int, jp_base_url: str
) -> Workspace:
    return Workspace(
        f"http://127.0.0.1:{jp_http_port}{jp_base_url}", token=jp_serverapp.identity_provider.token
    )


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def all_logs(jp_serverapp: Any) -> Iterator[_Everything]:
    """Every record of the root logger, the server's own logger and tornado's, at DEBUG."""
    handler = _Everything()
    loggers = [
        logging.getLogger(),
        jp_serverapp.log,
        logging.getLogger("tornado.access"),
        logging.getLogger("tornado.application"),
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


async def test_client_explains_rewrites_and_completes(ws: Workspace, workspace: Path) -> None:
    (workspace / "shapes.py").write_text(SOURCE)
    explained = await asyncio.to_thread(ws.explain, "shapes.py", 1, 2, "What does it return?")
    assert explained["text"].strip()
    assert explained["usage"]["completion_tokens"] > 0

    proposal = await asyncio.to_thread(
        ws.rewrite, "shapes.py", 1, 2, "Add a one-line docstring.", max_tokens=120
    )
    assert set(proposal) >= {"diff", "base", "unchanged", "usage", "finish_reason", "raw"}
    assert proposal["finish_reason"] in ("stop", "length")
    assert isinstance(proposal["raw"], str) and proposal["raw"]
    assert set(proposal["checks"]) == {
        "parses",
        "parser",
        "error",
        "parsed_before",
        "outside_selection",
    }
    assert proposal["checks"]["parser"] == "python-ast"
    assert proposal["checks"]["outside_selection"] is False, "the server splices the selection"
    assert (workspace / "shapes.py").read_text() == SOURCE, "rewrite writes nothing"

    completed = await asyncio.to_thread(
        ws.complete, "shapes.py", SOURCE + "\n\ndef volume(w, h, d):\n    return ", max_tokens=16
    )
    assert isinstance(completed["completion"], str)
    assert completed["usage"]["completion_tokens"] <= 16


async def test_client_errors_are_codeyard_api_errors(ws: Workspace, workspace: Path) -> None:
    (workspace / "shapes.py").write_text(SOURCE)
    with pytest.raises(CodeyardAPIError) as info:
        await asyncio.to_thread(ws.rewrite, "shapes.py", 1, 2, "x", max_tokens=401)
    assert info.value.status == 400 and info.value.code == "bad_request"
    assert info.value.body["field"] == "max_tokens" and info.value.body["maximum"] == 400
    with pytest.raises(CodeyardAPIError) as info:
        await asyncio.to_thread(ws.explain, "missing.py", 1, 1)
    assert info.value.status == 404
    with pytest.raises(CodeyardAPIError) as info:
        await asyncio.to_thread(ws.complete, "shapes.py", 7)  # type: ignore[arg-type]
    assert info.value.status == 400


async def test_the_raw_answer_is_returned_but_never_logged(
    ws: Workspace, workspace: Path, all_logs: _Everything
) -> None:
    (workspace / "shapes.py").write_text(SOURCE)
    answers = []
    for instruction, max_tokens in (("Add a one-line docstring.", 96), ("Add type hints.", 3)):
        try:
            answer = await asyncio.to_thread(
                ws.rewrite, "shapes.py", 4, 5, instruction, max_tokens=max_tokens
            )
        except CodeyardAPIError as err:  # 422: no usable code; the body still has `raw`
            assert err.status == 422, err
            answer = err.body
        answers.append(answer)
    raws = [a["raw"] for a in answers if a.get("raw", "").strip()]
    assert raws, answers
    logged = "\n".join(all_logs.lines)
    assert all_logs.lines, "the handler saw the server's log records"
    for raw in raws:
        for line in raw.splitlines():
            # Lines of the user's own file are in logs only if something logs code; the
            # model's other lines are checked the same way.
            if len(line.strip()) > 12:
                assert line.strip() not in logged
