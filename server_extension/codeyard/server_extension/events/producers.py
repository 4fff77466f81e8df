"""What the workspace's parts emit, built from what they already answer or record.

Each helper takes the answer or audit record the operation produced and keeps only names,
ids and counts, so no event can carry code, a prompt, an answer, a commit message or a
remote URL (the same rule as the audit log). The handlers call these; the schemas in
`schemas/` refuse any other field.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..errors import CodeyardError
from .emitter import emit

#: Most paths one event lists (`path_count` is always exact).
LISTED_PATHS = 200

#: Which audit actions mean files changed, and who wrote them.
_WRITERS = (("patch.apply", "patch"), ("patch.revert", "patch"), ("contents.", "contents"))


def writer_of(action: str) -> str | None:
    """`patch`, `contents` or `external` for an audit action that changes files, else None."""
    if action == "external.change":
        return "external"
    for prefix, writer in _WRITERS:
        if action == prefix or (prefix.endswith(".") and action.startswith(prefix)):
            return writer
    return None


class RecordEvents:
    """Audit listener: a `files` event for every record that lists changed paths.

    Every writer already records its changes (the patch engine, the Contents API hook, the
    external-change watcher), so listening to the log covers all of them in one place.
    Runs in the writer's thread, under the log's lock: it only hands the event on.
    """

    def __init__(self, serverapp: Any) -> None:
        self.serverapp = serverapp

    def __call__(self, _epoch: str, record: dict[str, Any]) -> None:
        action = str(record.get("action") or "")
        writer = writer_of(action)
        paths = record.get("paths") or []
        if writer is None or not paths:
            return
        emit(
            self.serverapp,
            "files",
            {
                "writer": writer,
                "action": action,
                "paths": [str(p) for p in paths[:LISTED_PATHS]],
                "path_count": len(paths),
                "seq": int(record["seq"]),
                "user": str(record.get("user") or ""),
            },
        )


def patch_event(
    serverapp: Any, action: str, result: Mapping[str, Any], *, user: str, cell_id: str | None = None
) -> None:
    """`patch` after an apply or revert answered `result` (`{patch_id, files}`)."""
    files = result.get("files") or []
    paths = list(dict.fromkeys(str(f["path"]) for f in files))
    data: dict[str, Any] = {
        "action": action,
        "patch_id": str(result["patch_id"]),
        "paths": paths[:LISTED_PATHS],
        "path_count": len(paths),
        "user": user,
    }
    if cell_id is not None:
        data["cell_id"] = cell_id
    emit(serverapp, "patch", data)


class AssistProgress:
    """An explain or rewrite request's `start` and `end` events (see `assist_progress`)."""

    def __init__(self, serverapp: Any, operation: str, request: Mapping[str, Any], user: str):
        self.serverapp = serverapp
        self.base: dict[str, Any] = {
            "operation": operation,
            "request_id": uuid.uuid4().hex,
            "user": user,
        }
        for key in ("path", "start_line", "end_line", "cell_id"):
            if isinstance(request.get(key), (str, int)):
                self.base[key] = request[key]
        self.outcome = "ok"
        self.error: str | None = None
        self.usage: Mapping[str, Any] = {}
        self.unchanged: bool | None = None
        self.started = time.perf_counter()

    def fail(self, code: str) -> None:
        """The request ended with error `code` after its answer had started."""
        self.outcome, self.error = "error", code

    def cancel(self) -> None:
        self.outcome = "cancelled"

    def start(self) -> None:
        emit(self.serverapp, "assist", {**self.base, "phase": "start"})

    def end(self) -> None:
        data: dict[str, Any] = {
            **self.base,
            "phase": "end",
            "outcome": self.outcome,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 1),
        }
        if self.error:
            data["error"] = self.error
        for key in ("prompt_tokens", "completion_tokens"):
            if isinstance(self.usage.get(key), int):
                data[key] = self.usage[key]
        reason = self.usage.get("finish_reason")
        if isinstance(reason, str) and reason:
            data["finish_reason"] = reason
        if self.unchanged is not None:
            data["unchanged"] = self.unchanged
        emit(self.serverapp, "assist", data)


@contextmanager
def assist_progress(
    serverapp: Any, operation: str, request: Mapping[str, Any], *, user: str
) -> Iterator[AssistProgress]:
    """`start` now, `end` when the block exits: `ok`, `error` with the code a
    `CodeyardError` carried, or `cancelled`. Set `.usage` (the answer's usage) in the block."""
    progress = AssistProgress(serverapp, operation, request, user)
    progress.start()
    try:
        yield progress
    except CodeyardError as err:
        progress.fail(err.code)
        raise
    except BaseException as exc:
        if exc.__class__.__name__ in ("CancelledError", "StreamClosedError"):
            progress.cancel()
        else:
            progress.fail("internal_error")
        raise
    finally:
        progress.end()


class GitOutcome:
    """What a git operation's answer says, for its `git` event."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}

    def answered(self, result: Mapping[str, Any]) -> None:
        for key in ("branch", "remote", "updated"):
            if key in result:
                self.fields[key] = result[key]
        commit = result.get("commit", result.get("after"))
        if commit is None or isinstance(commit, str):
            self.fields["commit"] = commit
        if isinstance(result.get("files"), int):
            self.fields["files"] = result["files"]


@contextmanager
def git_event(serverapp: Any, operation: str, *, user: str) -> Iterator[GitOutcome]:
    """One `git` event when the block exits: `ok` with what `.answered(result)` was given,
    or `error` with the `CodeyardError`'s code."""
    outcome = GitOutcome()
    data: dict[str, Any] = {"operation": operation, "user": user}
    try:
        yield outcome
    except CodeyardError as err:
        emit(serverapp, "git", {**data, "outcome": "error", "error": err.code})
        raise
    except Exception:
        emit(serverapp, "git", {**data, "outcome": "error", "error": "internal_error"})
        raise
    emit(serverapp, "git", {**data, **outcome.fields, "outcome": "ok"})


class ModelStatusEvents:
    """A `model` event each time `GET status` finds the gateway different from last time."""

    def __init__(self, serverapp: Any) -> None:
        self.serverapp = serverapp
        self.last: tuple[Any, ...] | None = None

    def seen(self, status: Mapping[str, Any]) -> None:
        healthy = bool(status.get("healthy"))
        data: dict[str, Any] = {"healthy": healthy}
        if isinstance(status.get("model"), str):
            data["model"] = status["model"]
        if isinstance(status.get("latency_ms"), (int, float)):
            data["latency_ms"] = max(0.0, float(status["latency_ms"]))
        if not healthy and isinstance(status.get("error"), str):
            data["error"] = status["error"]
        key = (healthy, data.get("model"), data.get("error"))
        if key == self.last:
            return
        self.last = key
        emit(self.serverapp, "model", data)
