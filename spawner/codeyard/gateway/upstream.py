"""Keep-alive HTTP/1.1 connections to the upstream (vLLM), read by a small parser of its own.

tornado's `AsyncHTTPClient` opens and closes a TCP connection per call, which would cost every
model call a connect plus vLLM's accept (about 1 ms on loopback, more when vLLM's event loop is
busy streaming to others). httpx pools connections but costs more per chunk than it saves: in
a 16-stream test against a zero-latency upstream its time to first chunk is two to three
times tornado's. tornado's own HTTP/1 code (`HTTP1Connection`) reads a chunked answer with
two awaited reads per chunk (its size line, then its data), each a future and a trip through
`IOStream`'s buffers: profiled in the gateway against a zero-latency upstream it was the
largest part of a call's CPU. Here each connection is an asyncio `Protocol` whose
`data_received` parses what arrived in one pass (status line, headers, Content-Length,
chunked or until-close bodies) and hands the caller all body bytes of that read in one
`on_chunk` call, with no future or task per chunk. The request goes out in one write.

The pool: idle connections are kept for `idle_seconds` (below vLLM's own keep-alive timeout);
a connection the peer closed or sent stray bytes on while idle is dropped when the loop sees
it, and a reused connection that turns out dead before any answer byte is replaced once.

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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast
from urllib.parse import urlparse

from tornado.netutil import DefaultLoopResolver, Resolver, is_valid_ip

# (status, headers with lower-case names) once they arrive; then the body bytes of each read
# of the socket; `on_chunk` may return an awaitable (the caller's flush) that is awaited
# before reading on: backpressure from a slow caller.
OnHeaders = Callable[[int, Mapping[str, str]], None]
OnChunk = Callable[[bytes], Awaitable[None] | None]

# Longest status line plus headers, and longest chunk-size or trailer line, accepted.
MAX_HEAD = 64 * 1024
MAX_LINE = 4 * 1024


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


class _Broken(Exception):
    """The answer's framing cannot be read (bad status line, chunk size, too long)."""


# Parser states of a connection.
_IDLE, _HEAD, _LENGTH, _SIZE, _DATA, _CRLF, _TRAILER, _UNTIL_CLOSE, _DONE = range(9)


class _Exchange:
    """One request on a connection: the caller's callbacks and the future `request` awaits
    (its result: whether the connection may be reused)."""

    __slots__ = ("aborted", "conn", "done", "on_chunk", "on_headers", "pending", "started")

    def __init__(self, conn: UpstreamConnection, on_headers: OnHeaders, on_chunk: OnChunk) -> None:
        self.conn = conn
        self.on_headers = on_headers
        self.on_chunk = on_chunk
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.started = False  # a status line arrived
        self.aborted = False
        self.pending: asyncio.Task[None] | None = None  # a slow caller's flush

    def abort(self) -> None:
        """Drop the call now: closing the socket tells vLLM to stop generating. Once the
        answer is complete the connection may be back in the pool, serving another call:
        it is not ours to close any more."""
        if self.done.done() or self.aborted:
            return
        self.aborted = True
        self.done.set_exception(Abort())
        self.conn.close()


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to the upstream; parses each answer as its bytes arrive."""

    def __init__(self, max_body_size: int = 1 << 30) -> None:
        self.transport: asyncio.Transport | None = None
        self.max_body_size = max_body_size
        self.closed = False
        self.usable = True  # False once anything but a clean keep-alive answer was seen
        self._exchange: _Exchange | None = None
        self._state = _IDLE
        self._buf = b""
        self._remaining = 0
        self._received = 0
        self._keep = True
        self._no_body = False

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.usable = False
        ex = self._exchange
        if ex is None or ex.done.done():
            return
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            self._keep = False
            self._complete(ex)
        else:
            ex.done.set_exception(UpstreamClosed("the model server closed the connection"))

    def eof_received(self) -> bool:
        return False  # close our side too; `connection_lost` reports it

    def data_received(self, data: bytes) -> None:
        ex = self._exchange
        if ex is None or ex.done.done():
            # Bytes nobody asked for (on an idle connection, or after an abort): the
            # connection is out of step with the peer.
            self.usable = False
            self.close()
            return
        try:
            body = self._parse(ex, self._buf + data if self._buf else data)
            pending = ex.on_chunk(body) if body else None
        except Abort:
            ex.abort()
            return
        except Exception as exc:  # unreadable framing, or the caller's callback failed
            self.usable = False
            if isinstance(exc, _Broken):
                exc = UpstreamClosed(f"unreadable answer from the model server: {exc}")
            if not ex.done.done():
                ex.done.set_exception(exc)
            self.close()
            return
        if pending is not None:
            # A slow caller: read no more until it has taken this.
            assert self.transport is not None
            self.transport.pause_reading()
            ex.pending = asyncio.ensure_future(self._drained(ex, pending))
            return
        if self._state == _DONE:
            self._complete(ex)

    # --- parsing ---

    def _parse(self, ex: _Exchange, buf: bytes) -> bytes:
        """Advance the parser over `buf`; returns the body bytes it held."""
        self._buf = b""
        out: list[bytes] = []
        pos = 0
        size = len(buf)
        while pos < size or self._state == _DONE:
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if size - pos > MAX_HEAD:
                        raise _Broken("headers too long")
                    self._buf = buf[pos:]
                    break
                self._head(ex, buf[pos:end])
                pos = end + 4
            elif state in (_LENGTH, _DATA):
                take = min(self._remaining, size - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DONE if state == _LENGTH else _CRLF
            elif state in (_SIZE, _TRAILER):
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > MAX_LINE:
                        raise _Broken("chunk line too long")
                    self._buf = buf[pos:]
                    break
                line = buf[pos:end]
                pos = end + 2
                if state == _TRAILER:
                    if not line:
                        self._state = _DONE
                    continue
                try:
                    self._remaining = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _Broken(f"bad chunk size {line[:40]!r}") from None
                if self._remaining < 0:
                    raise _Broken("negative chunk size")
                self._state = _DATA if self._remaining else _TRAILER
            elif state == _CRLF:
                if size - pos < 2:
                    self._buf = buf[pos:]
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise _Broken("chunk not followed by CRLF")
                pos += 2
                self._state = _SIZE
            elif state == _UNTIL_CLOSE:
                out.append(buf[pos:])
                pos = size
            else:  # _DONE: anything after the answer puts the connection out of step
                if pos < size:
                    self._keep = False
                break
        if not out:
            return b""
        body = out[0] if len(out) == 1 else b"".join(out)
        self._received += len(body)
        if self._received > self.max_body_size:
            raise _Broken(f"answer over {self.max_body_size} bytes")
        return body

    def _head(self, ex: _Exchange, head: bytes) -> None:
        """The status line and headers: call `on_headers` and choose how the body is framed."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise _Broken(f"bad status line {lines[0][:60]!r}")
        try:
            status = int(parts[1])
        except ValueError:
            raise _Broken(f"bad status line {lines[0][:60]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _Broken(f"bad header line {line[:60]!r}")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        if 100 <= status < 200:
            return  # an interim answer (100 Continue): the real one follows
        ex.started = True
        connection = headers.get("connection", "").lower()
        if parts[0] == "HTTP/1.0":
            self._keep = "keep-alive" in connection
        else:
            self._keep = "close" not in connection
        ex.on_headers(status, headers)
        if self._no_body or status in (204, 304):
            self._state = _DONE
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = _SIZE
        elif "content-length" in headers:
            try:
                self._remaining = int(headers["content-length"])
            except ValueError:
                raise _Broken("bad Content-Length") from None
            if self._remaining < 0:
                raise _Broken("bad Content-Length")
            if self._remaining > self.max_body_size:
                raise _Broken(f"answer over {self.max_body_size} bytes")
            self._state = _LENGTH if self._remaining else _DONE
        else:
            self._state = _UNTIL_CLOSE
            self._keep = False

    # --- one request ---

    def begin(
        self, method: str, request: bytes, on_headers: OnHeaders, on_chunk: OnChunk
    ) -> _Exchange:
        """Send `request` (status line, headers and body in one write) and start reading its
        answer; `request` awaits the returned exchange's `done`."""
        ex = _Exchange(self, on_headers, on_chunk)
        self._exchange = ex
        self._state = _HEAD
        self._buf = b""
        self._received = 0
        self._keep = True
        self._no_body = method == "HEAD"
        if self.closed or self.transport is None:
            ex.done.set_exception(UpstreamClosed("the connection was closed"))
            return ex
        self.transport.write(request)
        return ex

    def _complete(self, ex: _Exchange) -> None:
        if not ex.done.done():
            ex.done.set_result(self._keep and not self.closed)

    async def _drained(self, ex: _Exchange, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Abort:
            ex.pending = None
            ex.abort()
            return
        ex.pending = None
        if ex.done.done() or self.closed:
            return
        if self._state == _DONE:
            self._complete(ex)
        elif self.transport is not None:
            self.transport.resume_reading()

    def finish(self) -> bool:
        """End the current exchange; True if the connection may serve another request."""
        ex = self._exchange
        self._exchange = None
        self._state = _IDLE
        reusable = (
            ex is not None
            and ex.done.done()
            and not ex.done.cancelled()
            and ex.done.exception() is None
            and ex.done.result()
        )
        return bool(reusable) and self.usable and not self.closed

    def close(self) -> None:
        self.usable = False
        ex = self._exchange
        if ex is not None and ex.pending is not None:
            ex.pending.cancel()
        if self.transport is not None:
            self.transport.close()


class LiteralResolver(Resolver):
    """Answers IP literals (the usual 127.0.0.1 Hub) without the default resolver's
    thread-pool hop, which costs whole scheduler slices on a busy machine. The gateway's
    Hub lookups go through tornado's HTTP client, which uses it."""

    def initialize(self) -> None:
        self._fallback = DefaultLoopResolver()

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        if is_valid_ip(host):
            return [(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port))]
        return await self._fallback.resolve(host, port, family)


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
        self.max_body_size = max_body_size
        self._ssl = ssl.create_default_context() if self.https else None
        self._idle: list[tuple[UpstreamConnection, float]] = []
        self.opened = 0
        # Keeping connections warm: the keeper task runs while a call took a connection in
        # the last `warm_seconds`.
        self.warm_seconds = warm_seconds
        self.on_warmed = on_warmed
        self.warmed = 0
        self._last_use = 0.0
        self._keeper: asyncio.Task[None] | None = None

    async def _open(self) -> UpstreamConnection:
        """A new connection (TCP_NODELAY: asyncio sets it on TCP transports, so requests and
        relayed chunks, all small writes, never wait for an ACK)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self.max_body_size),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except (OSError, TimeoutError) as exc:
            raise UpstreamUnavailable(f"{exc.__class__.__name__}: {exc}") from exc
        return conn

    async def _connection(self) -> tuple[UpstreamConnection, bool]:
        """(connection, reused): the most recently idle live connection, else a new one."""
        now = time.monotonic()
        while self._idle:
            conn, since = self._idle.pop()
            if now - since < self.idle_seconds and conn.usable:
                return conn, True
            conn.close()
        conn = await self._open()
        self.opened += 1
        return conn, False

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
                for conn in fresh:
                    if conn is None:
                        continue
                    if len(self._idle) < self.max_idle:
                        # At the front: calls take the most recently idle (the end) first.
                        self._idle.insert(0, (conn, now))
                    else:
                        conn.close()
        finally:
            self._keeper = None

    async def _open_ahead(self) -> UpstreamConnection | None:
        try:
            conn = await self._open()
        except UpstreamUnavailable:
            return None  # vLLM away: the next call finds out and says so
        self.warmed += 1
        if self.on_warmed is not None:
            self.on_warmed()
        return conn

    def _release(self, conn: UpstreamConnection) -> None:
        if self.idle_seconds > 0 and len(self._idle) < self.max_idle and conn.usable:
            self._idle.append((conn, time.monotonic()))
        else:
            conn.close()

    def _request_bytes(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> bytes:
        head = [f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.netloc}\r\n"]
        for name, value in headers.items():
            head.append(f"{name}: {value}\r\n")
        if body is not None:
            head.append(f"Content-Length: {len(body)}\r\n")
        head.append("\r\n")
        text = "".join(head)
        # Header injection: a CR or LF anywhere but the line ends (a key file with a stray
        # newline, say) would split a line.
        if text.count("\n") != len(head) + 1 or text.count("\r") != len(head) + 1:
            raise ValueError("newline in an upstream request line or header")
        data = text.encode("latin-1")
        return data + body if body else data

    async def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
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
        request = self._request_bytes(method, path, headers, body)
        for attempt in range(2):
            conn, reused = await self._connection()
            self._taken()
            ex = conn.begin(method, request, on_headers, on_chunk)
            if on_sent is not None:
                on_sent(not reused)
            if on_abortable is not None:
                on_abortable(ex.abort)
            try:
                await ex.done
            except UpstreamClosed:
                conn.finish()
                conn.close()
                if ex.started or not reused or attempt:
                    raise UpstreamClosed(
                        "the model server closed the connection mid-answer"
                    ) from None
                # A reused connection died between the check and our write: a new one, once.
                continue
            except BaseException:
                # Abort, or cancelled (a timeout): dropping the connection stops vLLM.
                conn.finish()
                conn.close()
                raise
            if conn.finish():
                self._release(conn)
            else:
                conn.close()
            return

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        for conn, _ in self._idle:
            conn.close()
        self._idle.clear()
