"""A run's output as it is streamed and kept: the head up to the cap, then only a tail.

A test run's most useful lines are usually its last ones (pytest's summary, a traceback's
end), and its volume can be anything. So the first `cap` bytes are streamed and kept as
they come; past the cap one notice says so, the rest is counted but not streamed, and the
last `tail` bytes of it are kept aside and streamed once the command has ended, after a
notice saying how many bytes were skipped. Memory per run stays below `cap + tail` bytes
of text plus small per-chunk overhead.

Bytes are decoded as UTF-8 with invalid sequences replaced, per stream and incrementally,
so a character split across two reads is not mangled.
"""

from __future__ import annotations

import codecs
from collections import deque
from dataclasses import dataclass
from typing import Literal

Stream = Literal["stdout", "stderr", "notice"]


@dataclass(frozen=True)
class Chunk:
    """One piece of output, numbered like the run's events (`seq`)."""

    seq: int
    stream: Stream
    text: str

    def to_json(self) -> dict[str, object]:
        return {"seq": self.seq, "stream": self.stream, "text": self.text}


class Numbering:
    """Numbers a run's events from 1; output chunks and the start and exit events share it."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self) -> int:
        self.last += 1
        return self.last


class RunOutput:
    """Decides what of a run's output is streamed and kept; `numbering` gives each chunk
    its `seq`, shared with the run's other events so output and exit stay in one order."""

    def __init__(self, cap: int, tail: int, numbering: Numbering | None = None) -> None:
        self.cap = cap
        self.tail_limit = tail
        self.numbering = numbering or Numbering()
        self.chunks: list[Chunk] = []
        self.total_bytes = 0
        self.kept_bytes = 0
        self.capped = False
        self._decoders: dict[str, codecs.IncrementalDecoder] = {
            "stdout": codecs.getincrementaldecoder("utf-8")("replace"),
            "stderr": codecs.getincrementaldecoder("utf-8")("replace"),
        }
        self._tail: deque[tuple[Stream, bytes]] = deque()
        self._tail_bytes = 0
        self.skipped_bytes = 0

    @property
    def truncated(self) -> bool:
        return self.capped

    def _chunk(self, stream: Stream, text: str) -> Chunk:
        chunk = Chunk(self.numbering(), stream, text)
        self.chunks.append(chunk)
        return chunk

    def feed(self, stream: Stream, data: bytes) -> list[Chunk]:
        """Take bytes just read from `stream`; return the chunks to stream now."""
        self.total_bytes += len(data)
        out: list[Chunk] = []
        if not self.capped:
            room = self.cap - self.kept_bytes
            head, rest = data[:room], data[room:]
            self.kept_bytes += len(head)
            text = self._decoders[stream].decode(head)
            if text:
                out.append(self._chunk(stream, text))
            if not rest:
                return out
            self.capped = True
            out.append(
                self._chunk(
                    "notice",
                    f"\n[codeyard: the output cap of {self.cap} bytes is reached; the rest "
                    f"is not shown while the command runs; its last {self.tail_limit} bytes "
                    "follow when it ends]\n",
                )
            )
            data = rest
        self._keep_tail(stream, data)
        return out

    def _keep_tail(self, stream: Stream, data: bytes) -> None:
        if self.tail_limit <= 0:
            self.skipped_bytes += len(data)
            return
        self._tail.append((stream, data))
        self._tail_bytes += len(data)
        while self._tail_bytes > self.tail_limit:
            old_stream, old = self._tail[0]
            excess = self._tail_bytes - self.tail_limit
            if len(old) <= excess:
                self._tail.popleft()
                self._tail_bytes -= len(old)
                self.skipped_bytes += len(old)
            else:
                self._tail[0] = (old_stream, old[excess:])
                self._tail_bytes -= excess
                self.skipped_bytes += excess

    def finish(self) -> list[Chunk]:
        """The command has ended: flush the decoders and, past the cap, the kept tail."""
        out: list[Chunk] = []
        if not self.capped:
            for stream, decoder in self._decoders.items():
                text = decoder.decode(b"", final=True)
                if text:
                    out.append(self._chunk(stream, text))  # type: ignore[arg-type]
            return out
        out.append(
            self._chunk(
                "notice",
                f"\n[codeyard: {self.skipped_bytes} bytes of output skipped; "
                f"the last {self._tail_bytes} bytes:]\n",
            )
        )
        for stream, data in self._tail:
            text = data.decode("utf-8", "replace")
            if out and out[-1].stream == stream:
                merged = Chunk(out[-1].seq, stream, out[-1].text + text)
                out[-1] = merged
                self.chunks[-1] = merged
            else:
                out.append(self._chunk(stream, text))
        self._tail.clear()
        return out

    def since(self, seq: int) -> list[Chunk]:
        """Kept chunks numbered above `seq`, in order."""
        return [c for c in self.chunks if c.seq > seq]

    def tail_text(self, limit: int) -> str:
        """The last `limit` characters of kept output (notices included), for a summary."""
        parts: list[str] = []
        size = 0
        for chunk in reversed(self.chunks):
            parts.append(chunk.text)
            size += len(chunk.text)
            if size >= limit:
                break
        return "".join(reversed(parts))[-limit:]
