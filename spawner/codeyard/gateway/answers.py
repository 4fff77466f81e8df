"""What the gateway learns from a request and its answer without keeping any text.

`prompt_digest` hashes the prompt part of a request body. `AnswerTally` reads the answer as
it streams past (Server-Sent Events or one JSON body), hashes the generated text and picks
up the `usage` block. Only digests and counts leave this module.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson


def prompt_digest(body: dict[str, Any]) -> str:
    """sha256 of the prompt: the `messages` list (chat) or `prompt` (completions)."""
    prompt = body.get("messages", body.get("prompt", ""))
    canonical = json.dumps(prompt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class AnswerTally:
    """Feed raw answer bytes in order; read `answer_sha256` and token counts at the end."""

    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming
        self._hash = hashlib.sha256()
        self._pending = b""
        self._body = bytearray()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.chunks = 0

    def feed(self, data: bytes) -> None:
        self.chunks += 1
        if not self.streaming:
            self._body += data
            return
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload and payload != b"[DONE]":
                    self._take(payload)

    def _take(self, payload: bytes) -> None:
        try:
            event = orjson.loads(payload)  # one per token: orjson is several times faster
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        for choice in event.get("choices") or ():
            text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
            if isinstance(text, str) and text:
                self._hash.update(text.encode("utf-8"))
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)

    def finish(self) -> None:
        if self.streaming:
            if self._pending.startswith(b"data:"):
                self.feed(b"\n")
            return
        try:
            body = json.loads(bytes(self._body))
        except ValueError:
            return
        if isinstance(body, dict):
            for choice in body.get("choices") or ():
                message = choice.get("message") or {}
                text = message.get("content") or choice.get("text") or ""
                if isinstance(text, str) and text:
                    self._hash.update(text.encode("utf-8"))
            usage = body.get("usage")
            if isinstance(usage, dict):
                self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                self.completion_tokens = int(usage.get("completion_tokens") or 0)
        self._body.clear()

    @property
    def answer_sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
