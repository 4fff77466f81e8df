"""`GET codeyard/api/events`: the workspace's events over a WebSocket, against a real
jupyter-server.

Clients are real WebSocket clients over loopback: tornado's for the well-behaved ones, and
for the slow one a raw TCP socket that does the handshake by hand and then never reads, so
the server meets a real full socket, not a simulated one. File writes by "another process"
are a real subprocess; the watcher is on in this module. The model is never reached: the
gateway is a closed loopback port, so explain fails the way it does when the model is down.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jpconfig import closed_port, server_config
from support.contents_api import text_file
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from codeyard.server_extension.events import SCHEMA_PREFIX, emit
from codeyard.server_extension.events.fanout import EventFanout
from codeyard.server_extension.events.handlers import SLOW_CLIENT_CLOSE

WAIT = 30.0  # seconds; events come within milliseconds, the watcher's within about one
QUEUE = 50  # the per-client queue in this module: small, so a stalled client overflows soon
SECRET_LINE = "print('the body of this line must never be in an event')"

Message = dict[str, Any]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return server_config(
        CodeyardApp={"external_changes": True}, CodeyardEvents={"queue_size": QUEUE}
    )


def create(path: str, line: str) -> str:
    return f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{line}\n"


class EventsClient:
    """A subscriber that reads every message as it comes, like the panel does."""

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self.messages: list[Message] = []
        self.raw: list[str] = []
        self.closed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            text = await self.conn.read_message()
            if text is None:
                self.closed.set()
                return
            assert isinstance(text, str)
            self.raw.append(text)
            self.messages.append(json.loads(text))

    async def wait_for(self, match: Callable[[Message], bool], what: str) -> Message:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for message in self.messages:
                if match(message):
                    return message
            await asyncio.sleep(0.02)
        seen = [(m["event"], m["data"]) for m in self.messages]
        raise AssertionError(f"no event {what} within {WAIT} s; got {seen}")

    def close(self) -> None:
        self.conn.close()
        self._reader.cancel()


@pytest.fixture
def events(jp_ws_fetch: Any) -> Iterator[Callable[[], Awaitable[EventsClient]]]:
    """`await events()`: a subscribed, reading client; closed at the end of the test."""
    opened: list[EventsClient] = []

    async def connect() -> EventsClient:
        client = EventsClient(await jp_ws_fetch("codeyard", "api", "events"))
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


async def until(check: Callable[[], bool], what: str) -> None:
    """Poll `check` (a few times a tick) until it holds; fail after WAIT seconds."""
    for _ in range(int(WAIT / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: not within {WAIT} s")


def fanout_of(jp_serverapp: Any) -> EventFanout:
    fanout: EventFanout = jp_serverapp.web_app.settings["codeyard_events"]
    return fanout


def ws_url(jp_http_port: int, jp_base_url: str) -> str:
    """The socket's URL, for a client that brings its own headers (or none).

    The test must also use `http_server_client`: that fixture is what starts the server."""
    return f"ws://127.0.0.1:{jp_http_port}{jp_base_url}codeyard/api/events"


async def test_a_socket_without_credentials_is_refused(
    jp_serverapp: Any, http_server_client: Any, jp_http_port: int, jp_base_url: str
) -> None:
    url = ws_url(jp_http_port, jp_base_url)
    for headers in ({}, {"Authorization": "token not-the-servers-token"}):
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(HTTPRequest(url, headers=headers))
        assert refused.value.code == 403, headers
    assert not fanout_of(jp_serverapp).subscribers


async def test_the_same_socket_with_the_token_opens(
    jp_serverapp: Any,
    http_server_client: Any,
    jp_http_port: int,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
) -> None:
    url = ws_url(jp_http_port, jp_base_url)
    conn = await websocket_connect(HTTPRequest(url, headers=jp_auth_header))
    try:
        await until(lambda: bool(fanout_of(jp_serverapp).subscribers), "subscribed")
        assert len(fanout_of(jp_serverapp).subscribers) == 1
    finally:
        conn.close()


async def test_apply_and_revert_arrive_with_names_and_counts_only(
    api: Any, events: Any, workspace: Path
) -> None:
    client = await events()
    other = await events()  # a second tab sees the same events
    status, applied = await api("patch/apply", body={"diff": create("app.py", SECRET_LINE)})
    assert status == 200, applied
    patch_id = applied["patch_id"]

    for c in (client, other):
        event = await c.wait_for(
            lambda m: m["event"] == "patch" and m["data"]["action"] == "applied",
            "patch applied",
        )
        assert event["data"] == {
            "action": "applied",
            "patch_id": patch_id,
            "paths": ["app.py"],
            "path_count": 1,
            "user": event["data"]["user"],
        }
        assert event["data"]["user"]
        assert event["time"].endswith("+00:00")
    changed = await client.wait_for(
        lambda m: m["event"] == "files" and m["data"]["action"] == "patch.apply", "files"
    )
    assert changed["data"]["writer"] == "patch"
    assert changed["data"]["paths"] == ["app.py"] and changed["data"]["path_count"] == 1
    assert isinstance(changed["data"]["seq"], int) and changed["data"]["seq"] >= 1

    status, reverted = await api(f"patch/{patch_id}/revert", body={})
    assert status == 200, reverted
    event = await client.wait_for(
        lambda m: m["event"] == "patch" and m["data"]["action"] == "reverted", "patch reverted"
    )
    assert event["data"]["patch_id"] == patch_id and event["data"]["paths"] == ["app.py"]
    await client.wait_for(
        lambda m: m["event"] == "files" and m["data"]["action"] == "patch.revert", "files"
    )
    assert not (workspace / "app.py").exists()
    assert all("must never be" not in raw for raw in client.raw + other.raw)
    assert all(m["event"] in {"patch", "files"} for m in client.messages), client.messages


async def test_a_failed_apply_sends_no_patch_event(api: Any, events: Any) -> None:
    client = await events()
    status, body = await api("patch/apply", body={"diff": "not a diff"})
    assert status == 400, body
    status, applied = await api("patch/apply", body={"diff": create("after.py", "x = 1")})
    assert status == 200, applied
    await client.wait_for(lambda m: m["event"] == "patch", "patch applied")
    patches = [m for m in client.messages if m["event"] == "patch"]
    assert [m["data"]["patch_id"] for m in patches] == [applied["patch_id"]]


async def test_a_write_by_another_process_arrives_as_an_external_change(
    events: Any, workspace: Path
) -> None:
    client = await events()
    code = f"open({str(workspace / 'notes.txt')!r}, 'w').write({SECRET_LINE!r})"
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], check=True)
    event = await client.wait_for(
        lambda m: m["event"] == "files" and "notes.txt" in m["data"]["paths"], "external change"
    )
    assert event["data"]["writer"] == "external"
    assert event["data"]["action"] == "external.change"
    assert all("must never be" not in raw for raw in client.raw)


async def test_an_editor_save_arrives_as_a_contents_change(jp_fetch: Any, events: Any) -> None:
    client = await events()
    body = text_file(SECRET_LINE)
    await jp_fetch("api", "contents", "saved.py", method="PUT", body=json.dumps(body))
    event = await client.wait_for(
        lambda m: m["event"] == "files" and "saved.py" in m["data"]["paths"], "contents save"
    )
    assert event["data"]["writer"] == "contents"
    assert event["data"]["action"].startswith("contents.")
    assert all("must never be" not in raw for raw in client.raw)


async def test_explain_progress_has_a_start_and_an_end_and_never_the_question(
    api: Any, events: Any, jp_serverapp: Any, workspace: Path
) -> None:
    llm = jp_serverapp.web_app.settings["codeyard_explainer"].llm
    llm.url = f"http://127.0.0.1:{closed_port()}"  # the gateway is down: refused at once
    llm.token = "t"
    (workspace / "mod.py").write_text("def area(r):\n    return 3.14 * r * r\n")
    client = await events()
    question = "what does this secret question ask"
    status, body = await api(
        "explain", body={"path": "mod.py", "start_line": 1, "end_line": 2, "question": question}
    )
    assert status >= 500, body
    start = await client.wait_for(
        lambda m: m["event"] == "assist" and m["data"]["phase"] == "start", "start"
    )
    end = await client.wait_for(
        lambda m: m["event"] == "assist" and m["data"]["phase"] == "end", "end"
    )
    assert start["data"]["operation"] == end["data"]["operation"] == "explain"
    assert start["data"]["request_id"] == end["data"]["request_id"]
    assert start["data"]["path"] == "mod.py"
    assert (start["data"]["start_line"], start["data"]["end_line"]) == (1, 2)
    assert end["data"]["outcome"] == "error" and end["data"]["error"] == body["error"]
    assert end["data"]["duration_ms"] >= 0
    assert all("secret question" not in raw and "3.14" not in raw for raw in client.raw)

    status, body = await api("status")
    assert status == 503, body
    model = await client.wait_for(lambda m: m["event"] == "model", "model status")
    assert model["data"]["healthy"] is False and model["data"]["error"] == "llm_unavailable"
    # The same status again is no news: one event per change.
    await api("status")
    await api("patch/apply", body={"diff": create("marker.py", "x = 1")})
    await client.wait_for(lambda m: m["event"] == "patch", "marker patch")
    assert len([m for m in client.messages if m["event"] == "model"]) == 1


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    who = ["-c", "user.name=T", "-c", "user.email=t@example.org"]
    done = subprocess.run(
        ["git", "-C", str(repo), *who, *args], capture_output=True, env=env, check=True
    )
    return done.stdout.decode()


async def test_git_commit_and_a_failed_push_arrive_with_their_outcome(
    api: Any, events: Any, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    git(workspace, "init", "-q", "-b", "main")
    (workspace / "a.txt").write_text("one\n")
    git(workspace, "add", "a.txt")
    git(workspace, "commit", "-q", "-m", "first")
    (workspace / "a.txt").write_text("two\n")
    client = await events()
    message = "a commit message that stays out of events"
    status, body = await api("git/commit", body={"message": message})
    assert status == 200, body
    event = await client.wait_for(lambda m: m["event"] == "git", "git commit")
    assert event["data"]["operation"] == "commit" and event["data"]["outcome"] == "ok"
    assert event["data"]["commit"] == body["commit"] == git(workspace, "rev-parse", "HEAD").strip()
    assert event["data"]["branch"] == "main" and event["data"]["files"] == 1

    status, body = await api("git/push", body={})  # no remote: refused
    assert status >= 400, body
    failed = await client.wait_for(
        lambda m: m["event"] == "git" and m["data"]["operation"] == "push", "git push"
    )
    assert failed["data"]["outcome"] == "error" and failed["data"]["error"] == body["error"]
    assert all("stays out of events" not in raw for raw in client.raw)


class StalledClient:
    """A WebSocket client that completes the handshake and then never reads: its receive
    window fills, the server's socket buffer fills, and the server's writes stop draining."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.port, self.path, self.headers = port, path, headers

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        await loop.sock_connect(self.sock, ("127.0.0.1", self.port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in self.headers.items()),
        ]
        await loop.sock_sendall(self.sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await loop.sock_recv(self.sock, 1)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head

    def read_all(self) -> bytes:
        """Everything the server sent after the handshake, up to its end of stream."""
        self.sock.setblocking(True)
        self.sock.settimeout(WAIT)
        data = b""
        try:
            while chunk := self.sock.recv(1 << 20):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        self.sock.close()
        return data


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each complete unmasked frame a server sent."""
    out, i = [], 0
    while i + 2 <= len(data):
        opcode, size = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if size == 126:
            size, i = int.from_bytes(data[i : i + 2], "big"), i + 2
        elif size == 127:
            size, i = int.from_bytes(data[i : i + 8], "big"), i + 8
        if i + size > len(data):
            break
        out.append((opcode, data[i : i + size]))
        i += size
    return out


async def test_a_client_that_stops_reading_is_dropped_and_others_keep_up(
    jp_serverapp: Any,
    events: Any,
    jp_http_port: int,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
) -> None:
    fanout = fanout_of(jp_serverapp)
    good = await events()
    stalled = StalledClient(jp_http_port, f"{jp_base_url}codeyard/api/events", jp_auth_header)
    await stalled.connect()
    await until(lambda: len(fanout.subscribers) == 2, "both subscribed")

    # Real events in bursts smaller than the queue; the reading client keeps up with each
    # burst, the stalled one cannot (each event names long paths, so its socket fills after
    # a few thousand).
    paths = [f"{'deep/' * 40}file{n}.py" for n in range(8)]
    sent = 0
    started = time.monotonic()
    while len(fanout.subscribers) == 2 and time.monotonic() - started < 120:
        for _ in range(QUEUE // 2):
            sent += 1
            data = {
                "writer": "external",
                "action": "external.change",
                "paths": paths,
                "path_count": len(paths),
                "seq": sent,
                "user": "test",
            }
            emit(jp_serverapp, "files", data)
        await until(
            lambda n=sent: bool(good.messages) and good.messages[-1]["data"]["seq"] == n,
            f"the reading client got event {sent}",
        )
    assert len(fanout.subscribers) == 1, "the stalled client was never dropped"
    dropped_after = sent

    # The server did not wait for it: the reading client got every event, in order.
    seqs = [m["data"]["seq"] for m in good.messages if m["event"] == "files"]
    assert seqs == list(range(1, dropped_after + 1))
    assert not good.closed.is_set()

    # What the stalled client finally reads ends with the close frame and its code.
    received = frames(await asyncio.to_thread(stalled.read_all))
    texts = [p for op, p in received if op == 0x1]
    assert texts and len(texts) < dropped_after
    closes = [p for op, p in received if op == 0x8]
    assert closes, "no close frame"
    assert int.from_bytes(closes[0][:2], "big") == SLOW_CLIENT_CLOSE


async def test_every_schema_file_in_the_folder_is_registered_and_relayed(
    jp_serverapp: Any, events: Any
) -> None:
    from codeyard.server_extension.events import SCHEMA_DIR

    registered = set(jp_serverapp.event_logger.schemas.schema_ids)
    names = sorted(p.stem for p in SCHEMA_DIR.glob("*.yaml"))
    assert {"patch", "files", "assist", "model", "git"} <= set(names)
    for name in names:
        assert f"{SCHEMA_PREFIX}{name}/v1" in registered, name
    client = await events()
    emit(jp_serverapp, "model", {"healthy": True, "model": "m", "latency_ms": 1.5})
    event = await client.wait_for(lambda m: m["event"] == "model", "model")
    assert event["data"] == {"healthy": True, "model": "m", "latency_ms": 1.5}


async def test_an_event_outside_its_schema_is_not_sent(jp_serverapp: Any, events: Any) -> None:
    client = await events()
    # A field the schema does not name (here, content) is refused, and the caller goes on.
    emit(jp_serverapp, "model", {"healthy": True, "answer": SECRET_LINE})
    emit(jp_serverapp, "model", {"healthy": False, "error": "llm_timeout"})
    event = await client.wait_for(lambda m: m["event"] == "model", "model")
    assert event["data"] == {"healthy": False, "error": "llm_timeout"}
    assert all("must never be" not in raw for raw in client.raw)


async def test_events_emitted_from_another_thread_arrive(jp_serverapp: Any, events: Any) -> None:
    client = await events()
    await asyncio.to_thread(emit, jp_serverapp, "model", {"healthy": True, "model": "thread"})
    event = await client.wait_for(lambda m: m["event"] == "model", "model")
    assert event["data"]["model"] == "thread"
