"""Inline completion: `POST complete` asks the gateway's `/v1/completions` for a short
continuation of the text before the cursor.

Inline suggestions fire on every pause in typing, so each call is kept small: the prefix is
cut to its last lines, the answer to a few tokens (`CodeyardCompleter.max_tokens`), and the
text is trimmed to one statement with its indented block, never past a blank line. Secrets
in the prefix are redacted as for explain and rewrite. Logs carry hashes and sizes only.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePosixPath
from typing import Any, NotRequired, TypedDict

from tornado import httpclient
from traitlets import Float, Int, validate
from traitlets.config import LoggingConfigurable

from ..errors import bad_request
from ..paths import WorkspacePaths
from .client import CodeyardLLM, Usage
from .redaction import Redactor

PYTHON_SUFFIXES = frozenset({".py", ".pyi", ".ipynb"})
_STRINGS = re.compile(r"'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"|#.*$")
_OPEN, _CLOSE = "([{", ")]}"


class CompletionRequest(TypedDict):
    """The body of `POST complete`."""

    path: str  # the file being edited; decides the language, need not exist yet
    prefix: str  # text before the cursor
    suffix: NotRequired[str]  # text after the cursor, used to avoid repeating it
    max_tokens: NotRequired[int]  # at most `CodeyardCompleter.max_tokens`


class CompletionResult(TypedDict):
    """The answer: `completion` is inserted at the cursor as is ("" when nothing fits)."""

    completion: str
    usage: dict[str, Any]  # the same shape as explain's and rewrite's usage


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _depth(line: str) -> int:
    """Net open brackets on one line, outside string literals and comments (roughly)."""
    code = _STRINGS.sub("", line)
    return sum(code.count(c) for c in _OPEN) - sum(code.count(c) for c in _CLOSE)


def trim_completion(prefix: str, text: str, suffix: str = "", *, python: bool = True) -> str:
    """Cut a model continuation to what an inline suggestion should offer.

    Never past a blank line. For Python, also at the end of the statement the cursor is in:
    a later line that is back at (or left of) the statement's indentation, with no bracket
    left open, starts the next statement. A completion that only repeats the text after
    the cursor is dropped.
    """
    text = text.replace("\r\n", "\n")
    blank = re.search(r"\n[ \t]*\n", text)
    if blank:
        text = text[: blank.start() + 1]
    lines = text.split("\n")
    if python and lines:
        current = prefix.rsplit("\n", 1)[-1]
        first = current + lines[0]
        base = _indent(first) if first.strip() else None
        depth = _depth(first)
        kept = [lines[0]]
        for line in lines[1:]:
            if line.strip():
                if base is None:
                    base = _indent(line)
                else:
                    continued = depth > 0 or kept[-1].rstrip().endswith("\\")
                    if not continued and _indent(line) <= base:
                        break
            kept.append(line)
            depth += _depth(line)
        text = "\n".join(kept)
    # A trailing newline would push the text after the cursor down a line.
    text = text.rstrip(" \t\n")
    after = suffix.lstrip(" \t").split("\n", 1)[0].strip()
    if after and text.strip() and after.startswith(text.strip()):
        return ""
    return text


# Text above the prompt's cut that is redacted with it: more than any PEM key is long.
REDACTION_LEAD_CHARS = 64 * 1024


def _tail(text: str, limit: int) -> str:
    """The last `limit` characters of `text`, cut at a line start when there is one."""
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    start = tail.find("\n")
    return tail[start + 1 :] if 0 <= start < len(tail) - 1 else tail


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class CodeyardCompleter(LoggingConfigurable):
    """Inline completions through the LLM gateway (`c.CodeyardCompleter.*`).

    Uses `CodeyardLLM` for the gateway's address, the user's token, the model and the
    timeouts; only the endpoint (`/v1/completions`) and the prompt are its own.
    """

    max_tokens = Int(
        64,
        help="""Most tokens one inline completion may have. Requests asking for more are
        capped to this; small keeps suggestions fast and short.""",
    ).tag(config=True)

    @validate("max_tokens")
    def _check_max_tokens(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if value <= 0:
            raise ValueError("max_tokens must be positive")
        return value

    max_prefix_chars = Int(
        3000,
        help="""Characters of text before the cursor sent to the model, cut at a line start.
        Keeps the prompt inside a small model's context and the answer fast.""",
    ).tag(config=True)

    max_input_chars = Int(
        1_000_000,
        help="""Longest prefix or suffix accepted at all; larger requests answer 400.""",
    ).tag(config=True)

    temperature = Float(
        0.0, help="""Sampling temperature; 0 gives the same suggestion for the same text."""
    ).tag(config=True)

    request_timeout = Float(
        20.0,
        help="""Seconds one completion may take. Shorter than explain's: a late inline
        suggestion is useless, the user has typed on.""",
    ).tag(config=True)

    def __init__(self, llm: CodeyardLLM, paths: WorkspacePaths, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.llm = llm
        self.paths = paths

    def parse_request(self, body: dict[str, Any]) -> CompletionRequest:
        path, prefix, suffix = body.get("path"), body.get("prefix"), body.get("suffix", "")
        if not isinstance(path, str) or not path:
            raise bad_request("path is required")
        rel = self.paths.resolve(path).rel
        if not isinstance(prefix, str):
            raise bad_request("prefix is required and must be a string")
        if suffix is None:
            suffix = ""
        if not isinstance(suffix, str):
            raise bad_request("suffix must be a string")
        if max(len(prefix), len(suffix)) > self.max_input_chars:
            raise bad_request(f"prefix and suffix may have at most {self.max_input_chars} chars")
        if not prefix.strip():
            raise bad_request("prefix must contain some text before the cursor")
        request: CompletionRequest = {"path": rel, "prefix": prefix, "suffix": suffix}
        if "max_tokens" in body and body["max_tokens"] is not None:
            wanted = body["max_tokens"]
            if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 1:
                raise bad_request("max_tokens must be a positive integer")
            request["max_tokens"] = wanted
        return request

    def prompt(self, request: CompletionRequest, redactor: Redactor) -> str:
        # Redact before cutting, with room above the cut, so a key that starts above the
        # last `max_prefix_chars` is still recognised whole and not sent half-seen.
        prefix = _tail(request["prefix"], self.max_prefix_chars + REDACTION_LEAD_CHARS)
        return _tail(redactor.redact(prefix, request["path"]), self.max_prefix_chars)

    def _http_request(self, body: dict[str, Any]) -> httpclient.HTTPRequest:
        return self.llm.request(
            body,
            endpoint="completions",
            request_timeout=min(self.request_timeout, self.llm.request_timeout),
        )

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        redactor = Redactor()
        prompt = self.prompt(request, redactor)
        max_tokens = min(request.get("max_tokens", self.max_tokens), self.max_tokens)
        http = self._http_request(
            {
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": self.temperature,
                "stop": ["\n\n"],
            }
        )
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(http, raise_error=False)
        except (OSError, httpclient.HTTPClientError) as exc:
            raise self.llm._transport_error(exc) from None
        if resp.code == 599 and resp.error is not None:
            raise self.llm._transport_error(resp.error)
        if resp.code != 200:
            raise self.llm._error(resp.code, resp.body or b"")
        answer = json.loads(resp.body)
        raw = str(answer["choices"][0].get("text") or "")
        python = PurePosixPath(request["path"]).suffix.lower() in PYTHON_SUFFIXES
        text = trim_completion(
            request["prefix"], redactor.restore(raw), request.get("suffix", ""), python=python
        )
        counts = answer.get("usage") or {}
        usage = Usage(int(counts.get("prompt_tokens", 0)), int(counts.get("completion_tokens", 0)))
        self.log.debug(
            "codeyard complete path=%s prefix=%s completion=%s tokens=%d",
            _sha(request["path"]),
            _sha(request["prefix"]),
            _sha(text),
            usage.completion_tokens,
        )
        return {"completion": text, "usage": usage.to_json()}
