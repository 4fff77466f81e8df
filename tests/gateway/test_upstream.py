"""The gateway's HTTP/1.1 client to vLLM (`upstream.UpstreamPool`) against a scripted local
server: answers split at any byte, every body framing, reuse and replacement of kept
connections, aborts, a slow caller's backpressure and unreadable answers. No vLLM, no Hub:
these are the cases a real vLLM rarely shows on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from codeyard.gateway.upstream import Abort, UpstreamClosed, UpstreamPool, UpstreamUnavailable

# One answer: the byte pieces the server writes, in order, with a pause between them.
Script = Callable[[int, bytes], list[bytes]]


def chunked(*events: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


SSE = [b'data: {"a": 1}\n\n', b'data: {"b": 2}\n\n', b"data: [DONE]\n\n"]
STREAM = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + chunked(*SSE)
)


def split_every(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


class Server:
    """A local HTTP server whose answers come from `script(request_index, request)`; an
    answer piece `b""` means: close the connection there."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed_by_peer = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + (await reader.readexactly(length) if length else b"")
                index = len(self.requests)
                self.requests.append(request)
                for piece in self.script(index, request):
                    if not piece:
                        writer.close()
                        return
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.002)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_peer += 1
        finally:
            writer.close()

    def pool(self, **kw: Any) -> UpstreamPool:
        settings: dict[str, Any] = {"idle_seconds": 30, "max_idle": 8, "connect_timeout": 2}
        return UpstreamPool(f"http://127.0.0.1:{self.port}/prefix", **{**settings, **kw})


async def eventually(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Wait until `condition()` holds: a busy machine may take a while to deliver a close."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not hold in time")


async def call(
    pool: UpstreamPool,
    on_chunk: Callable[[bytes], Awaitable[None] | None] | None = None,
    body: bytes | None = b"{}",
) -> tuple[int, dict[str, str], bytes, list[bool]]:
    """(status, headers, body, [new_connection per attempt]) of one POST."""
    got: dict[str, Any] = {"body": b""}
    sent: list[bool] = []

    def on_headers(status: int, headers: Any) -> None:
        got["status"], got["headers"] = status, dict(headers)

    def collect(chunk: bytes) -> Awaitable[None] | None:
        got["body"] += chunk
        return on_chunk(chunk) if on_chunk else None

    await pool.request(
        "POST",
        "/v1/chat/completions",
        {"Content-Type": "application/json", "Authorization": "Bearer k"},
        body,
        on_headers,
        collect,
        sent.append,
    )
    return got["status"], got["headers"], got["body"], sent


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_a_chunked_answer_split_anywhere_arrives_whole_and_the_connection_is_reused(
    piece: int,
) -> None:
    async def scenario() -> None:
        async with Server(lambda i, r: split_every(STREAM, piece)) as server:
            pool = server.pool()
            status, headers, body, sent = await call(pool)
            assert status == 200
            assert headers["content-type"] == "text/event-stream"  # names in lower case
            assert body == b"".join(SSE)
            _, _, again, sent2 = await call(pool)
            assert again == body
            assert (sent, sent2) == ([True], [False])  # the second call reused the first's
            assert server.connections == 1 and pool.opened == 1
            request = server.requests[0]
            assert request.startswith(b"POST /prefix/v1/chat/completions HTTP/1.1\r\n")
            assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in request
            assert request.endswith(b"Content-Length: 2\r\n\r\n{}")
            pool.close()

    asyncio.run(scenario())


def test_content_length_and_until_close_bodies_and_interim_answers() -> None:
    answers = [
        [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe",
            b"llo",
        ],
        [b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"],
        # No length, not chunked: the body ends when the server closes.
        [b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"x":', b"1}", b""],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", b""],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    ]

    async def scenario() -> None:
        async with Server(lambda i, r: answers[i]) as server:
            pool = server.pool()
            assert (await call(pool))[::2] == (200, b"hello")
            assert (await call(pool))[::2] == (404, b"")
            assert (await call(pool))[::2] == (200, b'{"x":1}')
            assert (await call(pool))[::2] == (200, b"ok")
            assert (await call(pool))[::2] == (200, b"ok")
            # The first connection served two answers; the until-close answer and the
            # `Connection: close` one ended theirs.
            assert server.connections == 3
            pool.close()

    asyncio.run(scenario())


def test_a_kept_connection_that_dies_before_answering_is_replaced_once() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def scenario() -> None:
        # Request 1 reaches the kept connection, which closes without a byte: sent again on
        # a new one. Request 3 is on a new connection and is cut off: that is an error.
        script = {
            0: [ok],
            1: [b""],
            2: [ok],
            3: [b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nok", b""],
        }
        async with Server(lambda i, r: script.get(i, [b""])) as server:
            pool = server.pool()
            await call(pool)
            status, _, body, sent = await call(pool)
            assert (status, body, sent) == (200, b"ok", [False, True])
            pool.close()  # no kept connection: the next call opens one
            with pytest.raises(UpstreamClosed):
                await call(pool)
            assert pool.opened == 3

    asyncio.run(scenario())


def test_an_idle_connection_the_peer_closed_is_not_reused() -> None:
    answers = [
        [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b""],
        [b"HTTP/1.1 204 No\r\n\r\n"],
    ]

    async def scenario() -> None:
        async with Server(lambda i, r: answers[i]) as server:
            pool = server.pool()
            await call(pool)
            # The close reaches the pool while the connection is idle.
            await eventually(lambda: pool._idle[-1][0].closed)
            status, _, _, sent = await call(pool)
            assert (status, sent) == (204, [True])
            assert len(server.requests) == 2
            pool.close()

    asyncio.run(scenario())


def test_abort_from_a_chunk_or_from_outside_drops_the_connection() -> None:
    async def scenario() -> None:
        async with Server(lambda i, r: [STREAM[:90], STREAM[90:]]) as server:
            pool = server.pool()

            def stop(_chunk: bytes) -> None:
                raise Abort()

            with pytest.raises(Abort):
                await call(pool, stop)
            assert not pool._idle  # not kept for reuse

            aborts: list[Callable[[], None]] = []
            abortable = asyncio.Event()

            def on_abortable(abort: Callable[[], None]) -> None:
                aborts.append(abort)
                abortable.set()

            async def outside() -> None:
                await pool.request(
                    "GET",
                    "/v1/models",
                    {},
                    None,
                    lambda s, h: None,
                    lambda c: None,
                    None,
                    on_abortable,
                )

            task = asyncio.ensure_future(outside())
            await abortable.wait()
            aborts[0]()  # the caller hung up before any answer byte
            with pytest.raises(Abort):
                await task
            await eventually(lambda: server.closed_by_peer == 2)
            assert server.connections == 2 and server.closed_by_peer == 2
            assert not pool._idle
            pool.close()

    asyncio.run(scenario())


def test_a_slow_caller_holds_the_reading_and_the_end_waits_for_it() -> None:
    async def scenario() -> None:
        async with Server(lambda i, r: split_every(STREAM, 20)) as server:
            pool = server.pool()
            gate = asyncio.get_running_loop().create_future()
            seen: list[bytes] = []

            def on_chunk(chunk: bytes) -> Awaitable[None] | None:
                seen.append(chunk)
                return gate if len(seen) == 1 else None

            task = asyncio.ensure_future(call(pool, on_chunk))
            await asyncio.sleep(0.1)
            assert len(seen) == 1 and not task.done()  # held until the caller took it
            gate.set_result(None)
            _, _, body, _ = await task
            assert body == b"".join(SSE)
            pool.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTX/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX",
    ],
)
def test_an_unreadable_answer_is_reported_as_closed(answer: bytes) -> None:
    async def scenario() -> None:
        async with Server(lambda i, r: [answer]) as server:
            pool = server.pool()
            with pytest.raises(UpstreamClosed):
                await call(pool)
            pool.close()

    asyncio.run(scenario())


def test_a_timeout_drops_the_call_and_a_closed_port_is_unavailable() -> None:
    async def scenario() -> None:
        async with Server(lambda i, r: [STREAM[:40]]) as server:  # never finishes
            pool = server.pool()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await call(pool)
            await eventually(lambda: server.closed_by_peer == 1)
            assert server.closed_by_peer == 1 and not pool._idle
            pool.close()
            port = server.port
        closed = UpstreamPool(
            f"http://127.0.0.1:{port}", idle_seconds=1, max_idle=1, connect_timeout=1
        )
        with pytest.raises(UpstreamUnavailable):
            await call(closed)

    asyncio.run(scenario())


def test_a_newline_in_a_header_is_refused() -> None:
    pool = UpstreamPool("http://127.0.0.1:1", idle_seconds=1, max_idle=1, connect_timeout=1)
    with pytest.raises(ValueError, match="newline"):
        pool._request_bytes("POST", "/v1/x", {"Authorization": "Bearer k\r\nX-Evil: 1"}, b"")
    with pytest.raises(ValueError, match="newline"):
        pool._request_bytes("GET", "/v1/x\nHost: evil", {}, None)
