"""`POST complete`: inline completions through the real gateway to real vLLM (SmolLM2).

The model stack is the session fixture `model_stack` (conftest.py). Tests that need no
model override `jp_server_config` by parametrisation, so they never start it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from jpconfig import TOKENIZER, closed_port, server_config

from codeyard.server_extension.llm.client import CodeyardLLM
from codeyard.server_extension.llm.completion import CodeyardCompleter, trim_completion
from codeyard.server_extension.llm.redaction import Redactor
from codeyard.server_extension.paths import WorkspacePaths

CAP = 16
MARKER = "zq_complete_marker_51c9"


def completer_config(url: str, token: str) -> dict[str, Any]:
    return server_config(
        CodeyardLLM={"url": url, "token": token, "tokenizer_file": str(TOKENIZER)},
        CodeyardCompleter={"max_tokens": CAP},
    )


GATEWAY_DOWN = completer_config(f"http://127.0.0.1:{closed_port()}", "some-token")


@pytest.fixture
def jp_server_config(model_stack: dict[str, str]) -> dict[str, Any]:
    return completer_config(model_stack["url"], model_stack["token"])


# ---- through the real server and the real model ------------------------------------------


async def test_completion_continues_python_code_within_the_cap(
    api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    prefix = f"# {MARKER}\ndef add_numbers(a, b):\n    return "
    body = {"path": "calc.py", "prefix": prefix, "suffix": "\n", "max_tokens": 1000}
    status, answer = await api("complete", body=body)
    assert status == 200, answer
    assert set(answer) == {"completion", "usage"}
    assert isinstance(answer["completion"], str)
    assert answer["completion"].strip(), "a 135M model still continues `return `"
    assert "\n\n" not in answer["completion"]
    usage = answer["usage"]
    assert 0 < usage["completion_tokens"] <= CAP
    assert usage["prompt_tokens"] > 0
    assert MARKER not in caplog.text, "prompt text reached the server log"
    assert answer["completion"] not in caplog.text or len(answer["completion"]) < 4


async def test_completion_stops_at_the_end_of_the_statement(api: Any) -> None:
    prefix = "import math\n\n\ndef area(radius):\n    return math.pi * radius"
    status, answer = await api("complete", body={"path": "geo.py", "prefix": prefix})
    assert status == 200, answer
    text = answer["completion"]
    # The `return` line is inside `def`; anything the model adds after it at the def's
    # level (a new def, a call) is cut, and so is anything after a blank line.
    assert "\ndef " not in text and "\n\n" not in text
    assert not text.endswith("\n")


# ---- no model needed: jp_server_config is overridden ---------------------------------------


@pytest.mark.parametrize("jp_server_config", [GATEWAY_DOWN])
async def test_gateway_down_gives_503_and_logs_no_code(
    api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"path": "a.py", "prefix": f"x = 1  # {MARKER}\ny = "}
    status, err = await api("complete", body=body)
    assert status == 503, err
    assert err["error"] == "llm_unavailable"
    assert "not reachable" in err["message"]
    assert MARKER not in caplog.text


@pytest.mark.parametrize("jp_server_config", [completer_config("", "")])
async def test_no_gateway_configured_gives_503(api: Any) -> None:
    status, err = await api("complete", body={"path": "a.py", "prefix": "x = "})
    assert status == 503 and err["error"] == "llm_unavailable", err


@pytest.mark.parametrize("jp_server_config", [GATEWAY_DOWN])
@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"prefix": "x = "}, 400),
        ({"path": "", "prefix": "x = "}, 400),
        ({"path": "a.py"}, 400),
        ({"path": "a.py", "prefix": 3}, 400),
        ({"path": "a.py", "prefix": "   \n"}, 400),
        ({"path": "a.py", "prefix": "x = ", "suffix": ["y"]}, 400),
        ({"path": "a.py", "prefix": "x = ", "max_tokens": 0}, 400),
        ({"path": "a.py", "prefix": "x = ", "max_tokens": "8"}, 400),
        ({"path": "a.py", "prefix": "x = ", "max_tokens": True}, 400),
        ({"path": "../a.py", "prefix": "x = "}, 403),
        ({"path": "/etc/passwd", "prefix": "x = "}, 403),
    ],
)
async def test_bad_input_gets_its_status_before_any_gateway_call(
    api: Any, body: dict[str, Any], status: int
) -> None:
    got, err = await api("complete", body=body)
    assert got == status, err
    assert set(err) >= {"error", "message"}


@pytest.mark.parametrize("jp_server_config", [GATEWAY_DOWN])
async def test_a_body_that_is_not_json_gives_400(api: Any) -> None:
    status, err = await api("complete", raw_body=b"{not json")
    assert status == 400, err


# ---- the pure parts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "raw", "suffix", "want"),
    [
        # mid-line: finish the line, drop the next statement
        ("x = ", "compute(1)\ny = 2\n", "", "compute(1)"),
        # never past a blank line, even inside brackets
        ("def f():\n", "    a = (1,\n\n    2)\n", "", "    a = (1,"),
        # at a line's start: one statement, not the rest of the body
        ("def f():\n", "    a = 1\n    return a\n", "", "    a = 1"),
        # a block opener keeps its indented body, stops at the next def
        ("def add(a, b):", "\n    return a + b\ndef sub(a, b):\n", "", "\n    return a + b"),
        # open brackets continue the statement across lines
        ("total = sum(", "[\n1,\n2]\n)\nprint(total)\n", "", "[\n1,\n2]\n)"),
        # a trailing backslash continues too
        ("s = 1 + \\\n", "    2\nt = 3\n", "", "    2"),
        # a completion that only repeats the text after the cursor is dropped
        ("f(", "a, b)", "a, b)\n", ""),
    ],
)
def test_trim_completion_stops_at_a_blank_line_or_the_end_of_the_statement(
    prefix: str, raw: str, suffix: str, want: str
) -> None:
    assert trim_completion(prefix, raw, suffix) == want


def test_trim_completion_outside_python_only_stops_at_a_blank_line() -> None:
    raw = "- one\n- two\n\n# Next\n"
    assert trim_completion("List:\n", raw, python=False) == "- one\n- two"


def test_prompt_keeps_the_tail_of_a_long_prefix_and_redacts_secrets(tmp_path: Path) -> None:
    completer = CodeyardCompleter(CodeyardLLM(url="", token=""), WorkspacePaths(tmp_path))
    completer.max_prefix_chars = 200
    head = 'password = "hunter2-very-secret"\n' + "".join(f"a{i} = {i}\n" for i in range(100))
    request = completer.parse_request({"path": "s.py", "prefix": head + "b = "})
    redactor = Redactor()
    prompt = completer.prompt(request, redactor)
    assert len(prompt) <= 200 and prompt.endswith("a99 = 99\nb = ")
    assert prompt.startswith("a"), "cut at a line start"
    request = completer.parse_request({"path": "s.py", "prefix": head[:40] + "x = "})
    assert "hunter2" not in completer.prompt(request, Redactor())


def test_max_tokens_setting_must_be_positive() -> None:
    with pytest.raises(Exception, match="positive"):
        CodeyardCompleter(CodeyardLLM(), WorkspacePaths("."), max_tokens=0)


@pytest.mark.parametrize("jp_server_config", [GATEWAY_DOWN])
async def test_a_request_without_a_token_gets_403(without_token: Any) -> None:
    body = json.dumps({"path": "a.py", "prefix": "x = "})
    assert (await without_token("complete", "POST", body)).code == 403


@pytest.mark.parametrize("jp_server_config", [GATEWAY_DOWN])
def test_complete_handler_is_authenticated_and_scoped(jp_serverapp: Any) -> None:
    from codeyard.server_extension.llm.handlers import CompleteHandler

    assert jp_serverapp.web_app._check_handler_auth("complete", CompleteHandler) == []
    assert CompleteHandler.auth_resource == "codeyard:complete"
