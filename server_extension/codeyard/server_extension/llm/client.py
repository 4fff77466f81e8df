"""The workspace's client to the LLM gateway, and the settings of the model features.

The workspace never talks to vLLM: it calls the gateway (a JupyterHub service) with the
user's own JupyterHub token, which a spawned server has in `JUPYTERHUB_API_TOKEN`. Gateway
answers are turned into `CodeyardError`s whose messages are safe to show the user.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tornado import httpclient
from tornado.simple_httpclient import HTTPTimeoutError
from traitlets import Float, Int, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ..errors import CodeyardError
from .model_options import Limits


@dataclass
class Usage:
    """What one model call cost and which settings it ran with, shown to the user."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    context_tokens: int = 0
    dropped: list[str] = field(default_factory=list)
    model: str = ""  # the model that answered, as the gateway names it
    max_tokens: int = 0
    finish_reason: str = ""  # "stop", or "length" when max_tokens cut the answer
    context_lines: int = 0  # lines shown on each side of the selection, after the budget

    def note_context(self, ctx: Any) -> None:
        """Copy what the context builder did (a `context.Context`) into the usage."""
        self.context_tokens, self.dropped = ctx.tokens, ctx.dropped
        self.context_lines = ctx.surrounding

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "context_tokens": self.context_tokens,
            "context_dropped": self.dropped,
            "context_lines": self.context_lines,
            "model": self.model,
            "max_tokens": self.max_tokens,
            "finish_reason": self.finish_reason,
        }


def unavailable(message: str) -> CodeyardError:
    return CodeyardError(503, "llm_unavailable", message)


class CodeyardLLM(LoggingConfigurable):
    """Connection to the gateway and the knobs of explain/rewrite (`c.CodeyardLLM.*`)."""

    url = Unicode(
        help="""Base URL of the Codeyard LLM gateway, up to but without `/v1`, e.g.
        `http://hub:8002` or `http://127.0.0.1:8000/services/codeyard-llm`. Defaults to
        CODEYARD_LLM_URL. Empty means explain/rewrite answer 503.""",
    ).tag(config=True)

    @default("url")
    def _default_url(self) -> str:
        return os.environ.get("CODEYARD_LLM_URL", "")

    token = Unicode(
        help="""The caller's JupyterHub token sent to the gateway. Defaults to
        JUPYTERHUB_API_TOKEN, which JupyterHub gives every spawned server. It needs the
        `custom:codeyard-llm` scope (granted by hub_config/services_llm.py).""",
    ).tag(config=True)

    @default("token")
    def _default_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    model = Unicode(
        help="""Model id to ask for (vLLM's --served-model-name). Defaults to
        CODEYARD_LLM_MODEL, else `smollm2`.""",
    ).tag(config=True)

    @default("model")
    def _default_model(self) -> str:
        return os.environ.get("CODEYARD_LLM_MODEL", "smollm2")

    request_timeout = Float(
        120.0, help="""Seconds a whole model call may take before the user gets 504."""
    ).tag(config=True)

    connect_timeout = Float(
        5.0, help="""Seconds to wait for a connection to the gateway before 503."""
    ).tag(config=True)

    tokenizer_file = Unicode(
        help="""The served model's `tokenizer.json`, used to count the context budget exactly.
        Defaults to CODEYARD_TOKENIZER_FILE, else the converted SmolLM2 folder under
        ~/.cache/codeyard/models/smollm2. Missing file or `tokenizers` library: the budget is
        estimated at 3 bytes per token (see `llm/tokens.py`).""",
    ).tag(config=True)

    @default("tokenizer_file")
    def _default_tokenizer(self) -> str:
        fallback = Path.home() / ".cache" / "codeyard" / "models" / "smollm2" / "tokenizer.json"
        return os.environ.get("CODEYARD_TOKENIZER_FILE", str(fallback))

    context_token_budget = Int(
        1500,
        help="""Most tokens of code context (selection, surrounding lines, header,
        definitions) put in one prompt. Keep it well under the model's context length minus
        the answer's max tokens.""",
    ).tag(config=True)

    surrounding_lines = Int(
        20, help="""Lines shown before and after the selection, reduced to fit the budget."""
    ).tag(config=True)

    explain_max_tokens = Int(512, help="""Longest explanation, in tokens.""").tag(config=True)

    explain_temperature = Float(
        0.2,
        help="""Sampling temperature for explanations. Rewrites always use 0, so the same
        request gives the same edit.""",
    ).tag(config=True)

    rewrite_max_tokens = Int(
        1024, help="""Longest replacement the model may write, in tokens."""
    ).tag(config=True)

    max_tokens_limit = Int(
        2048,
        help="""Largest `max_tokens` an explain or rewrite request may ask for; a request
        asking for more gets 400. Requests without `max_tokens` use `explain_max_tokens` or
        `rewrite_max_tokens`. Keep it under the model's context length minus
        `context_token_budget`, or vLLM refuses long prompts.""",
    ).tag(config=True)

    max_context_lines = Int(
        200,
        help="""Largest `context_lines` (lines shown on each side of the selection) a request
        may ask for; more gets 400. Requests without it use `surrounding_lines`. The token
        budget may still show fewer.""",
    ).tag(config=True)

    status_timeout = Float(
        3.0,
        help="""Seconds `GET codeyard/api/status` waits for the gateway's `/v1/models` before
        it answers 503. Short: the panel asks it to show whether the model is up.""",
    ).tag(config=True)

    @validate("max_tokens_limit", "max_context_lines", "status_timeout")
    def _positive(self, proposal: Any) -> Any:
        if proposal["value"] <= 0:
            raise ValueError(f"{proposal['trait'].name} must be positive")
        return proposal["value"]

    def limits(self) -> Limits:
        """The bounds of a request's `max_tokens` and `context_lines`."""
        return {"max_tokens": self.max_tokens_limit, "context_lines": self.max_context_lines}

    def request(
        self,
        body: dict[str, Any] | None,
        *,
        endpoint: str = "chat/completions",
        request_timeout: float | None = None,
        connect_timeout: float | None = None,
        **kw: Any,
    ) -> httpclient.HTTPRequest:
        """An authenticated call to the gateway's `/v1/<endpoint>`: POST of `body`, or GET
        when `body` is None; 503 when unconfigured."""
        if not self.url:
            raise unavailable(
                "no LLM gateway is configured for this workspace (set CODEYARD_LLM_URL or "
                "c.CodeyardLLM.url)"
            )
        if not self.token:
            raise unavailable("no token for the LLM gateway (JUPYTERHUB_API_TOKEN is not set)")
        return httpclient.HTTPRequest(
            f"{self.url.rstrip('/')}/v1/{endpoint}",
            method="GET" if body is None else "POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            body=None if body is None else json.dumps({"model": self.model, **body}),
            connect_timeout=connect_timeout or self.connect_timeout,
            request_timeout=request_timeout or self.request_timeout,
            **kw,
        )

    def _error(self, status: int, raw: bytes) -> CodeyardError:
        try:
            message = str(json.loads(raw)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = f"the LLM gateway answered {status}"
        if status in (401, 403):
            return CodeyardError(
                502, "llm_auth", f"the LLM gateway refused this workspace's token: {message}"
            )
        if status in (429, 503, 504, 413):
            return CodeyardError(
                status,
                "llm_"
                + {429: "rate_limited", 503: "unavailable", 504: "timeout", 413: "too_large"}[
                    status
                ],
                message,
            )
        return CodeyardError(502, "llm_error", f"the LLM gateway answered {status}: {message}")

    def _transport_error(self, exc: BaseException) -> CodeyardError:
        if isinstance(exc, HTTPTimeoutError):
            return CodeyardError(
                504, "llm_timeout", f"the model did not answer within {self.request_timeout:g} s"
            )
        return unavailable(
            f"the LLM gateway at {self.url} is not reachable ({exc.__class__.__name__}); "
            "the shared model may be down or starting"
        )

    async def complete(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.2
    ) -> tuple[str, Usage]:
        """One non-streaming chat call: (text, usage)."""
        request = self.request(
            {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        )
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError) as exc:
            raise self._transport_error(exc) from None
        if resp.code == 599 and resp.error is not None:
            raise self._transport_error(resp.error)
        if resp.code != 200:
            raise self._error(resp.code, resp.body or b"")
        body = json.loads(resp.body)
        choice = body["choices"][0]
        text = choice["message"].get("content") or ""
        usage = body.get("usage") or {}
        return text, Usage(
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
            model=str(body.get("model") or self.model),
            max_tokens=max_tokens,
            finish_reason=str(choice.get("finish_reason") or ""),
        )

    async def stream(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.2
    ) -> AsyncIterator[str | Usage]:
        """Yield text deltas as they arrive, then one `Usage`."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        status: list[int] = []
        buffer = b""

        def on_header(line: str) -> None:
            if line.startswith("HTTP/"):
                status.append(int(line.split(" ", 2)[1]))

        request = self.request(
            {
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            streaming_callback=queue.put_nowait,
            header_callback=on_header,
        )
        fetch = asyncio.ensure_future(
            httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        )
        fetch.add_done_callback(lambda _: queue.put_nowait(None))
        usage = Usage(model=self.model, max_tokens=max_tokens)
        error_body = b""
        try:
            while (chunk := await queue.get()) is not None:
                if status and status[-1] != 200:
                    error_body += chunk
                    continue
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if not payload or payload == b"[DONE]":
                        continue
                    event = json.loads(payload)
                    if event.get("model"):
                        usage.model = str(event["model"])
                    for choice in event.get("choices") or ():
                        if choice.get("finish_reason"):
                            usage.finish_reason = str(choice["finish_reason"])
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield text
                    if event.get("usage"):
                        usage.prompt_tokens = int(event["usage"].get("prompt_tokens", 0))
                        usage.completion_tokens = int(event["usage"].get("completion_tokens", 0))
            try:
                resp = fetch.result()
            except (OSError, httpclient.HTTPClientError) as exc:
                raise self._transport_error(exc) from None
            if resp.code == 599 and resp.error is not None:
                raise self._transport_error(resp.error)
            if resp.code != 200:
                raise self._error(resp.code, error_body or resp.body or b"")
        finally:
            if not fetch.done():
                fetch.cancel()
        yield usage
