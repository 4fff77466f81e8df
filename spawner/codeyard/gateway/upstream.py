"""Keep-alive HTTP/1.1 connections to the upstream (vLLM), on tornado's own HTTP/1 code.

tornado's `AsyncHTTPClient` opens and closes a TCP connection per call, which would cost every
model call a connect plus vLLM's accept (about 1 ms on loopback, more when vLLM's event loop is
busy streaming to others). httpx pools connections but costs more per chunk than it saves: in
a 16-stream test against a zero-latency upstream its time to first chunk is two to three
times tornado's. This module keeps tornado's parser and adds the pool: idle connections are kept
for `idle_seconds` (below vLLM's own keep-alive timeout) and checked for a close by the peer
before reuse; a reused connection that turns out dead before any answer byte is replaced once.

Connections are also kept warm ahead of calls (`warm_seconds`). vLLM closes a connection
idle for 5 s, so calls that come in bursts a few seconds apart (a user asking again, an
editor completing as one types) would open a connection on every burst, and opening one
costs a wake-up of vLLM's API server, which on busy cores waits for a CPU slice: 50-260 ms
measured under contention. For `warm_seconds` after a call the pool replaces each
connection calls left idle by a new one before it reaches `idle_seconds`, in the
background, so the next burst finds as many open as the last one left.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import DefaultLoopResolver, Resolver, is_valid_ip
from tornado.tcpclient import TCPClient

# (status, headers) once they arrive; then each body chunk; both may return an awaitable
# (the caller's flush) that is awaited before reading on: backpressure from a slow caller.
OnHeaders = Callable[[int, httputil.HTTPHeaders], None]
OnChunk = Callable[[bytes], Awaitable[None] | None]


class UpstreamUnavailable(ConnectionError):
    """No connection to the upstream could be made (refused, unreachable, timed out)."""


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before or while answering."""


class UpstreamRejected(ConnectionError):
    """The upstream answered, but not with what the gateway asked for (e.g. 401: our key)."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(detail or f"the model server answered {status}")
        self.status = status


class Abort(Exception):
    """Raised by `on_chunk` (or its awaitable) to stop reading: the connection is dropped."""


class _Delegate(httputil.HTTPMessageDelegate):
    def __init__(self, stream: IOStream, on_headers: OnHeaders, on_chunk: OnChunk) -> None:
        self.stream = stream
        self.on_headers = on_headers
        self.on_chunk = on_chunk
        self.started = False
        self.finished = False
        self.aborted = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        self.started = True
        self.on_headers(start_line.code, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.aborted:
            return None
        try:
            pending = self.on_chunk(chunk)
        except Abort:
            self.abort()
            return None
        return None if pending is None else self._settle(pending)

    async def _settle(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Abort:
            self.abort()

    def abort(self) -> None:
        # Closing the socket ends tornado's read loop and tells vLLM to stop generating.
        # Once the answer is complete the connection may be back in the pool, serving
        # another call: it is not ours to close any more.
        if self.finished or self.aborted:
            return
        self.aborted = True
        self.stream.close()

    def finish(self) -> None:
        self.finished = True


class LiteralResolver(Resolver):
    """Answers IP literals (the usual 127.0.0.1 upstream) without the default resolver's
    thread-pool hop, which costs whole scheduler slices on a busy machine."""

    def initialize(self) -> None:
        self._fallback = DefaultLoopResolver()

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        if is_valid_ip(host):
            return [(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port))]
        return await self._fallback.resolve(host, port, family)


def _peer_closed(stream: IOStream) -> bool:
    """True if an idle connection was closed by the peer (EOF or stray bytes are waiting)."""
    sock = stream.socket
    if stream.closed() or sock is None:
        return True
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False  # nothing to read: alive and idle
    except ValueError:
        return False  # TLS sockets take no flags; rely on the idle limit and the retry
    except OSError:
        return True
    return True  # EOF, or bytes nobody asked for: not reusable


class UpstreamPool:
    """Sends requests to one base URL over reused connections. One instance per gateway."""

    def __init__(
        self,
        base_url: str,
        *,
        idle_seconds: float,
        max_idle: int,
        connect_timeout: float,
        max_body_size: int = 1 << 30,
        warm_seconds: float = 0.0,
        on_warmed: Callable[[], Any] | None = None,
    ) -> None:
        url = urlparse(base_url)
        self.https = url.scheme == "https"
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if self.https else 80)
        self.prefix = url.path.rstrip("/")
        self.netloc = url.netloc
        self.idle_seconds = idle_seconds
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self.params = HTTP1ConnectionParameters(
            no_keep_alive=False, decompress=False, max_body_size=max_body_size
        )
        self._ssl = ssl.create_default_context() if self.https else None
        self._tcp = TCPClient(resolver=LiteralResolver())
        self._idle: list[tuple[IOStream, float]] = []
        self.opened = 0
        # Keeping connections warm: the keeper task runs while a call took a connection in
        # the last `warm_seconds`.
        self.warm_seconds = warm_seconds
        self.on_warmed = on_warmed
        self.warmed = 0
        self._last_use = 0.0
        self._keeper: asyncio.Task[None] | None = None

    async def _connection(self) -> tuple[IOStream, bool]:
        """(stream, reused): the most recently idle live connection, else a new one."""
        now = time.monotonic()
        while self._idle:
            stream, since = self._idle.pop()
            if now - since < self.idle_seconds and not _peer_closed(stream):
                return stream, True
            stream.close()
        try:
            stream = await self._tcp.connect(
                self.host,
                self.port,
                ssl_options=self._ssl,
                timeout=self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamUnavailable(f"{exc.__class__.__name__}: {exc}") from exc
        # Requests and relayed chunks are small writes: never hold them for an ACK (Nagle).
        stream.set_nodelay(True)
        self.opened += 1
        return stream, False

    def _taken(self) -> None:
        self._last_use = time.monotonic()
        if self.warm_seconds > 0 and self.idle_seconds > 0 and self._keeper is None:
            self._keeper = asyncio.ensure_future(self._keep_warm())

    @property
    def _tick(self) -> float:
        return max(0.25, self.idle_seconds / 4)

    async def _keep_warm(self) -> None:
        """Every tick, replace the idle connections that would reach `idle_seconds` before
        the next tick by new ones: the new one is open before the old one is closed, so a
        call never finds fewer than the calls before it left. Only what calls left idle is
        renewed, never more; a connection vLLM closed early is left to `_connection`.
        Ends when no call took a connection for `warm_seconds` (the next call starts it)."""
        try:
            while time.monotonic() - self._last_use < self.warm_seconds:
                await asyncio.sleep(self._tick)
                stale_at = time.monotonic() - (self.idle_seconds - self._tick)
                stale = [entry for entry in self._idle if entry[1] <= stale_at]
                if not stale:
                    continue
                fresh = await asyncio.gather(*(self._open_ahead() for _ in stale))
                for entry in stale:
                    if entry in self._idle:  # else a call took it meanwhile
                        self._idle.remove(entry)
                        entry[0].close()
                now = time.monotonic()
                for stream in fresh:
                    if stream is None:
                        continue
                    if len(self._idle) < self.max_idle:
                        # At the front: calls take the most recently idle (the end) first.
                        self._idle.insert(0, (stream, now))
                    else:
                        stream.close()
        finally:
            self._keeper = None

    async def _open_ahead(self) -> IOStream | None:
        try:
            stream = await self._tcp.connect(
                self.host, self.port, ssl_options=self._ssl, timeout=self.connect_timeout
            )
        except (OSError, TimeoutError):
            return None  # vLLM away: the next call finds out and says so
        stream.set_nodelay(True)
        self.warmed += 1
        if self.on_warmed is not None:
            self.on_warmed()
        return stream

    def _release(self, stream: IOStream) -> None:
        stream.set_nodelay(True)  # tornado turns it off after each request
        if self.idle_seconds > 0 and len(self._idle) < self.max_idle and not stream.closed():
            self._idle.append((stream, time.monotonic()))
        else:
            stream.close()

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        on_headers: OnHeaders,
        on_chunk: OnChunk,
        on_sent: Callable[[bool], Any] | None = None,
        on_abortable: Callable[[Callable[[], None]], Any] | None = None,
    ) -> None:
        """Send one request and feed the answer to the callbacks as it arrives.

        `on_sent(new_connection)` is called once the request has been handed to the socket.
        `on_abortable(abort)` is handed a function that drops the call at once (this method
        then raises `Abort`): for a caller that hangs up while vLLM is still working on the
        prompt, when no chunk arrives to notice it by.
        Raises `UpstreamUnavailable` if no connection could be made, `UpstreamClosed` if the
        answer was cut off, `Abort` if `on_chunk` asked to stop. If the caller cancels (a
        timeout), the connection is dropped, which makes vLLM abort the generation.
        """
        for attempt in range(2):
            stream, reused = await self._connection()
            self._taken()
            conn = HTTP1Connection(stream, True, self.params)
            delegate = _Delegate(stream, on_headers, on_chunk)
            request_headers = httputil.HTTPHeaders({"Host": self.netloc, **headers})
            if body is not None:
                request_headers["Content-Length"] = str(len(body))
            keep = False
            try:
                conn.write_headers(
                    httputil.RequestStartLine(method, self.prefix + path, "HTTP/1.1"),
                    request_headers,
                    body,  # one write: headers and body in the same segment
                )
                conn.finish()
                if on_sent is not None:
                    on_sent(not reused)
                if on_abortable is not None:
                    on_abortable(delegate.abort)
                keep = await conn.read_response(delegate)
            except StreamClosedError:
                keep = False
            finally:
                if keep and delegate.finished and not delegate.aborted:
                    self._release(conn.detach())
                else:
                    stream.close()
            if delegate.aborted:
                raise Abort()
            if delegate.finished:
                return
            if delegate.started or not reused or attempt:
                raise UpstreamClosed("the model server closed the connection mid-answer")
            # A reused connection died between the check and our write: try a new one once.

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        for stream, _ in self._idle:
            stream.close()
        self._idle.clear()
