"""The model endpoints: `POST explain`, `rewrite`, `complete` and `GET status`.

Thin HTTP over `Explainer`, `Rewriter`, `CodeyardCompleter` and `gateway_status`; the
model itself is only ever reached through the gateway (`client.CodeyardLLM`).
"""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web
from tornado.iostream import StreamClosedError

from ..base import CodeyardHandler
from ..errors import CodeyardError
from ..events.producers import AssistProgress, assist_progress
from .client import CodeyardLLM, Usage
from .completion import CodeyardCompleter
from .explain import Explainer, ExplainRequest
from .rewrite import Rewriter
from .status import gateway_status


class ExplainHandler(CodeyardHandler):
    """`POST codeyard/api/explain`: Server-Sent Events with `Accept: text/event-stream`,
    else JSON."""

    auth_resource = "codeyard:explain"

    @property
    def explainer(self) -> Explainer:
        explainer: Explainer = self.settings["codeyard_explainer"]
        return explainer

    @web.authenticated
    @authorized
    async def post(self) -> None:
        request = self.explainer.parse_request(self.json_body())
        with assist_progress(self.serverapp, "explain", request, user=self.username) as progress:
            if "text/event-stream" in self.request.headers.get("Accept", ""):
                await self._stream(request, progress)
            else:
                cells = self.settings.get("codeyard_cells")
                answer = await self.explainer.answer(request, cells)
                progress.usage = answer["usage"]
                self.write_json(answer)

    async def _send(self, event: dict[str, Any]) -> None:
        self.write(f"data: {json.dumps(event)}\n\n")
        await self.flush()

    async def _stream(self, request: ExplainRequest, progress: AssistProgress) -> None:
        # Headers go out with the first delta, so errors before it keep their HTTP status.
        events = self.explainer.stream(request, self.settings.get("codeyard_cells"))
        started = False
        try:
            async for item in events:
                if not started:
                    self.set_status(200)
                    self.set_header("Content-Type", "text/event-stream; charset=utf-8")
                    self.set_header("Cache-Control", "no-cache")
                    self.set_header("X-Accel-Buffering", "no")
                    started = True
                if isinstance(item, Usage):
                    progress.usage = item.to_json()
                    await self._send({"done": True, "usage": progress.usage})
                else:
                    await self._send({"delta": item})
        except CodeyardError as err:
            if not started:
                raise
            progress.fail(err.code)
            await self._send({"error": err.code, "message": err.message})
        except StreamClosedError:
            progress.cancel()
            return  # the client went away; closing the generator stops the model call
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        self.finish(set_content_type="text/event-stream; charset=utf-8")


class RewriteHandler(CodeyardHandler):
    """`POST codeyard/api/rewrite`: a unified diff for one region, built by the server, not
    applied."""

    auth_resource = "codeyard:rewrite"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        rewriter: Rewriter = self.settings["codeyard_rewriter"]
        request = rewriter.parse_request(self.json_body())
        cells = self.settings.get("codeyard_cells")
        with assist_progress(self.serverapp, "rewrite", request, user=self.username) as progress:
            result = await rewriter.rewrite(request, cells)
            progress.usage, progress.unchanged = result["usage"], result["unchanged"]
        self.write_json(result)


class CompleteHandler(CodeyardHandler):
    """`POST codeyard/api/complete`: one short inline completion from the gateway."""

    auth_resource = "codeyard:complete"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        completer: CodeyardCompleter = self.settings["codeyard_completer"]
        request = completer.parse_request(self.json_body())
        self.write_json(await completer.complete(request))


class StatusHandler(CodeyardHandler):
    """`GET codeyard/api/status`: the model's name and whether the gateway answers, for the
    panel."""

    auth_resource = "codeyard:status"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        llm: CodeyardLLM = self.settings["codeyard_explainer"].llm
        self.set_header("Cache-Control", "no-store")
        # The bounds go with every answer, healthy or not: the panel's "Retry with more
        # tokens" raises `max_tokens` up to the admin's limit and no further.
        limits = {
            "max_tokens_limit": llm.max_tokens_limit,
            "rewrite_max_tokens": llm.rewrite_max_tokens,
            "explain_max_tokens": llm.explain_max_tokens,
        }
        model_events = self.settings["codeyard_model_events"]
        try:
            status = await gateway_status(llm)
        except CodeyardError as err:
            model_events.seen({**err.extra, "healthy": False, "error": err.code})
            err.extra.update(limits)
            raise
        model_events.seen(status)
        self.write_json({**status, **limits})
