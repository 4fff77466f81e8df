"""`codeyard/api/exec`: a command runs in the workspace, its output arrives as `exec` events
in order, and it ends by itself, by timeout or by cancel, with a bounded output and an
audit record that holds the command's hash and never its text or output.

Everything runs against a real jupyter-server with real child processes. Events are read
the way the events socket reads them: a listener on the server's `event_logger`. Waits are
bounded polls, never fixed sleeps standing in for a result.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from jpconfig import server_config

from codeyard.server_extension.exec.handlers import ExecHandler, ExecRunHandler
from codeyard.server_extension.exec.runs import SCHEMA_ID

WAIT = 60.0  # seconds; a run here takes about one, a loaded CI machine is slower

#: Small bounds so the cap, the grace and the concurrency limit are quick to reach.
EXEC = {"output_cap": 4096, "output_tail": 512, "kill_grace": 1.0, "max_concurrent": 2}


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return server_config(CodeyardExec=EXEC)


@pytest.fixture
def events(jp_serverapp: Any) -> list[dict[str, Any]]:
    """Every `exec` event the server emits, in emission order."""
    seen: list[dict[str, Any]] = []

    async def listener(logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        seen.append(data)

    jp_serverapp.event_logger.add_listener(schema_id=SCHEMA_ID, listener=listener)
    return seen


async def start(api: Any, command: Any, **fields: Any) -> str:
    status, body = await api("exec", body={"command": command, **fields})
    assert status == 202, body
    assert body["state"] == "running"
    return str(body["run_id"])


async def finished(events: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    """The run's events once its `exit` event has arrived."""
    deadline = time.monotonic() + WAIT
    while True:
        mine = [e for e in events if e["run_id"] == run_id]
        if mine and mine[-1]["kind"] == "exit":
            return mine
        assert time.monotonic() < deadline, mine
        await asyncio.sleep(0.05)


def text_of(run_events: list[dict[str, Any]], stream: str | None = None) -> str:
    return "".join(
        e["text"]
        for e in run_events
        if e["kind"] == "output" and (stream is None or e["stream"] == stream)
    )


def audit_lines(workspace: Path) -> bytes:
    return (workspace / ".codeyard" / "audit.jsonl").read_bytes()


def exec_records(workspace: Path, run_id: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in audit_lines(workspace).splitlines() if line]
    return [r for r in records if r.get("run_id") == run_id]


async def recorded(workspace: Path, run_id: str) -> list[dict[str, Any]]:
    """The run's `exec.start` and `exec.end` records; the end record is written right after
    the exit event, so it is awaited (bounded)."""
    deadline = time.monotonic() + WAIT
    while len(found := exec_records(workspace, run_id)) < 2:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it is dead for every purpose here.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# ---- output and exit codes ------------------------------------------------------------


async def test_output_streams_live_and_in_order(api: Any, events: list[Any]) -> None:
    script = (
        "import sys, time\n"
        "for i in range(5):\n"
        "    print(f'out {i}', flush=True)\n"
        "    print(f'err {i}', file=sys.stderr, flush=True)\n"
        "print('waiting', flush=True)\n"
        "time.sleep(1.5)\n"
        "print('done', flush=True)\n"
    )
    run_id = await start(api, [sys.executable, "-c", script])
    # Live: the first lines arrive while the command still runs.
    deadline = time.monotonic() + WAIT
    while "waiting" not in text_of([e for e in events if e["run_id"] == run_id], "stdout"):
        assert time.monotonic() < deadline, events
        await asyncio.sleep(0.02)
    status, body = await api(f"exec/{run_id}")
    assert status == 200 and body["state"] == "running", body

    mine = await finished(events, run_id)
    assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1))
    assert mine[0]["kind"] == "start" and mine[0]["cwd"] == ""
    assert mine[-1]["kind"] == "exit"
    assert text_of(mine, "stdout") == "".join(f"out {i}\n" for i in range(5)) + "waiting\ndone\n"
    assert text_of(mine, "stderr") == "".join(f"err {i}\n" for i in range(5))
    end = mine[-1]
    assert (end["state"], end["exit_code"], end["signal"], end["truncated"]) == (
        "exited",
        0,
        None,
        False,
    )
    assert 1.5 <= end["duration"] < WAIT
    assert end["output_bytes"] == len(text_of(mine).encode())

    status, body = await api(f"exec/{run_id}")
    assert status == 200
    assert body["state"] == "exited" and body["exit_code"] == 0
    assert "".join(c["text"] for c in body["chunks"]) == text_of(mine)
    assert body["tail"].endswith("done\n")
    # `since` gives only what came after an event the client has.
    status, later = await api(f"exec/{run_id}", params={"since": mine[-3]["seq"]})
    assert [c["seq"] for c in later["chunks"]] == [e["seq"] for e in mine[-2:-1]]


async def test_exit_codes_of_shell_and_argv_commands(api: Any, events: list[Any]) -> None:
    shell_run = await start(api, "echo failing >&2; exit 3")
    argv_run = await start(api, [sys.executable, "-c", "import sys; sys.exit(5)"])
    shell_end = (await finished(events, shell_run))[-1]
    argv_end = (await finished(events, argv_run))[-1]
    assert (shell_end["state"], shell_end["exit_code"]) == ("exited", 3)
    assert (argv_end["state"], argv_end["exit_code"]) == ("exited", 5)
    # An argv list is not a shell command: its arguments are data.
    literal = await start(api, ["echo", "$HOME", ";", "exit", "7"])
    mine = await finished(events, literal)
    assert text_of(mine) == "$HOME ; exit 7\n"
    assert mine[-1]["exit_code"] == 0


async def test_a_missing_program_is_a_clear_400(api: Any) -> None:
    status, body = await api("exec", body={"command": ["no-such-program-xyz", "-q"]})
    assert status == 400 and body["error"] == "command_not_found", body
    # A shell reports its own missing command the usual way: exit code 127.
    status, body = await api("exec", body={"command": "no-such-program-xyz"})
    assert status == 202


async def test_cwd_is_the_folder_asked_for(api: Any, events: list[Any], workspace: Path) -> None:
    (workspace / "sub" / "deeper").mkdir(parents=True)
    run_id = await start(api, "pwd", cwd="sub/deeper")
    mine = await finished(events, run_id)
    assert mine[0]["cwd"] == "sub/deeper"
    expected = await asyncio.to_thread(os.path.realpath, workspace / "sub" / "deeper")
    assert text_of(mine).strip() == expected


async def test_server_secrets_are_not_in_the_environment(
    api: Any, events: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token-value")
    monkeypatch.setenv("SOME_SERVICE_SECRET", "secret-value")
    monkeypatch.setenv("CODEYARD_VISIBLE", "visible-value")
    run_id = await start(
        api, 'echo "${JUPYTERHUB_API_TOKEN:-none} ${SOME_SERVICE_SECRET:-none} $CODEYARD_VISIBLE"'
    )
    assert text_of(await finished(events, run_id)) == "none none visible-value\n"


# ---- timeout and cancel ----------------------------------------------------------------


async def test_timeout_stops_the_whole_group(api: Any, events: list[Any], workspace: Path) -> None:
    # A child that outlives its shell unless the whole group is stopped.
    run_id = await start(api, "sleep 120 & echo $! > child.pid; wait", timeout=1.5)
    mine = await finished(events, run_id)
    end = mine[-1]
    assert end["state"] == "timeout"
    assert end["exit_code"] is None and end["signal"] == "SIGTERM"
    assert 1.5 <= end["duration"] < 10
    child = int((workspace / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while not gone(child):
        assert time.monotonic() < deadline, f"child {child} survived the timeout"
        await asyncio.sleep(0.05)


async def test_a_command_ignoring_sigterm_is_killed_after_the_grace(
    api: Any, events: list[Any]
) -> None:
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    run_id = await start(api, [sys.executable, "-c", script], timeout=1)
    end = (await finished(events, run_id))[-1]
    assert (end["state"], end["signal"]) == ("timeout", "SIGKILL")
    assert 1 + EXEC["kill_grace"] <= end["duration"] < 15


async def test_cancel_stops_a_running_command(api: Any, events: list[Any], workspace: Path) -> None:
    run_id = await start(api, "sleep 120 & echo $! > child.pid; echo started; wait")
    deadline = time.monotonic() + WAIT
    while "started" not in text_of([e for e in events if e["run_id"] == run_id]):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    status, body = await api(f"exec/{run_id}", method="DELETE")
    assert status == 202 and body["cancelling"] is True, body
    end = (await finished(events, run_id))[-1]
    assert end["state"] == "cancelled" and end["signal"] == "SIGTERM"
    assert end["duration"] < 10
    child = int((workspace / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while not gone(child):
        assert time.monotonic() < deadline, f"child {child} survived the cancel"
        await asyncio.sleep(0.05)
    status, body = await api(f"exec/{run_id}", method="DELETE")
    assert status == 409 and body["error"] == "run_finished", body
    status, body = await api(f"exec/{uuid.uuid4().hex}", method="DELETE")
    assert status == 404


async def test_leftover_processes_end_with_the_command(api: Any, events: list[Any]) -> None:
    # The shell exits at once; its background child would hold the pipes for two minutes.
    run_id = await start(api, "sleep 120 & echo $!")
    mine = await finished(events, run_id)
    assert mine[-1]["state"] == "exited" and mine[-1]["exit_code"] == 0
    assert mine[-1]["duration"] < 10
    child = int(text_of(mine).strip())
    deadline = time.monotonic() + 10
    while not gone(child):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


# ---- bounds -----------------------------------------------------------------------------


async def test_output_cap_truncates_with_a_marker_and_keeps_the_end(
    api: Any, events: list[Any]
) -> None:
    cap, tail = EXEC["output_cap"], EXEC["output_tail"]
    script = (
        "import sys\n"
        "for i in range(2000):\n"
        "    sys.stdout.write(f'line {i:05d} ' + 'x' * 40 + '\\n')\n"
        "sys.stdout.write('THE-END\\n')\n"
    )
    run_id = await start(api, [sys.executable, "-c", script])
    mine = await finished(events, run_id)
    total = 2000 * len("line 00000 " + "x" * 40 + "\n") + len("THE-END\n")
    end = mine[-1]
    assert end["truncated"] is True and end["output_bytes"] == total
    stdout = text_of(mine, "stdout")
    assert len(stdout.encode()) <= cap + tail
    assert stdout.startswith("line 00000 ")
    assert stdout.endswith("THE-END\n")
    notices = text_of(mine, "notice")
    assert f"output cap of {cap} bytes" in notices
    assert f"{total - cap - tail} bytes of output skipped" in notices
    # The marker sits between the head and the kept tail.
    kinds = [e.get("stream") for e in mine if e["kind"] == "output"]
    assert kinds.index("notice") > 0 and kinds[-1] == "stdout"
    status, body = await api(f"exec/{run_id}")
    assert status == 200
    assert body["truncated"] is True and body["output_cap"] == cap
    assert "".join(c["text"] for c in body["chunks"]) == text_of(mine)


async def test_too_many_runs_answer_429(api: Any, events: list[Any]) -> None:
    first = await start(api, "sleep 60")
    await start(api, "sleep 60")
    status, body = await api("exec", body={"command": "true"})
    assert status == 429 and body["error"] == "too_many_runs", body
    assert "2 commands are already running" in body["message"]
    status, _ = await api(f"exec/{first}", method="DELETE")
    assert status == 202
    await finished(events, first)
    third = await start(api, "echo again")
    assert text_of(await finished(events, third)) == "again\n"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"command": ""}, 400, "bad_request"),
        ({"command": []}, 400, "bad_request"),
        ({"command": 5}, 400, "bad_request"),
        ({"command": ["ls", 5]}, 400, "bad_request"),
        ({"command": "ls", "env": {}}, 400, "bad_request"),
        ({"command": "ls", "timeout": 0}, 400, "bad_request"),
        ({"command": "ls", "timeout": 999999}, 400, "bad_request"),
        ({"command": "ls", "timeout": "5"}, 400, "bad_request"),
        ({"command": "ls", "cwd": "../"}, 403, "path_forbidden"),
        ({"command": "ls", "cwd": "/etc"}, 403, "path_forbidden"),
        ({"command": "ls", "cwd": "a/../../x"}, 403, "path_forbidden"),
        ({"command": "ls", "cwd": "%2e%2e"}, 403, "path_forbidden"),
        ({"command": "ls", "cwd": "out"}, 403, "path_forbidden"),
        ({"command": "ls", "cwd": ".codeyard"}, 403, "path_forbidden"),
        ({"command": "ls", "cwd": ".git"}, 403, "path_forbidden"),
        ({"command": "ls", "cwd": "missing"}, 404, "not_found"),
        ({"command": "ls", "cwd": "file.txt"}, 400, "bad_request"),
    ],
)
async def test_bad_requests_and_path_escapes_in_cwd(
    api: Any,
    workspace: Path,
    tmp_path_factory: pytest.TempPathFactory,
    body: Any,
    status: int,
    error: str,
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (workspace / "out").symlink_to(outside, target_is_directory=True)
    (workspace / "file.txt").write_text("x\n")
    (workspace / ".git").mkdir()
    got, answer = await api("exec", body=body)
    assert (got, answer["error"]) == (status, error), answer
    assert "message" in answer


async def test_unknown_run_is_404(api: Any) -> None:
    status, body = await api(f"exec/{uuid.uuid4().hex}")
    assert status == 404 and body["error"] == "not_found"


# ---- auth and audit ---------------------------------------------------------------------


def test_handlers_are_authenticated_and_scoped(jp_serverapp: Any) -> None:
    for handler in (ExecHandler, ExecRunHandler):
        assert handler.auth_resource == "codeyard:exec"
        assert jp_serverapp.web_app._check_handler_auth("exec", handler) == []


@pytest.mark.parametrize(
    ("method", "endpoint", "body"),
    [
        ("POST", "exec", '{"command": "touch pwned"}'),
        ("GET", "exec/" + "a" * 32, None),
        ("DELETE", "exec/" + "a" * 32, None),
    ],
)
async def test_requests_without_token_get_403(
    without_token: Any, workspace: Path, method: str, endpoint: str, body: str | None
) -> None:
    assert (await without_token(endpoint, method, body)).code == 403
    assert not (workspace / "pwned").exists()


async def test_audit_holds_the_hash_never_the_command_or_output(
    api: Any, events: list[Any], workspace: Path, jp_serverapp: Any
) -> None:
    command = "printf '%s-%s\\n' AUDITPROBE OUTPUTMARK; printf 'SECRETCMD' >/dev/null; exit 4"
    run_id = await start(api, command)
    mine = await finished(events, run_id)
    assert "AUDITPROBE-OUTPUTMARK" in text_of(mine)
    start_rec, end_rec = await recorded(workspace, run_id)
    digest = hashlib.sha256(command.encode()).hexdigest()
    assert start_rec["action"] == "exec.start" and end_rec["action"] == "exec.end"
    assert start_rec["command_sha256"] == end_rec["command_sha256"] == digest
    assert start_rec["command_kind"] == "shell"
    assert (end_rec["exit_code"], end_rec["state"]) == (4, "exited")
    assert end_rec["duration"] == mine[-1]["duration"]
    assert end_rec["output_bytes"] == len("AUDITPROBE-OUTPUTMARK\n")
    raw = audit_lines(workspace)
    for needle in (b"AUDITPROBE", b"OUTPUTMARK", b"SECRETCMD", b"printf"):
        assert needle not in raw, needle
    status, page = await api("audit", params={"limit": 100})
    assert status == 200 and page["chain_ok"] is True
    assert "AUDITPROBE" not in json.dumps(page)
    # An argv command's hash is of its arguments joined by NUL bytes.
    argv = ["echo", "two words"]
    argv_run = await start(api, argv)
    await finished(events, argv_run)
    assert (await recorded(workspace, argv_run))[0]["command_sha256"] == hashlib.sha256(
        b"echo\x00two words"
    ).hexdigest()


async def test_server_stop_cancels_runs_and_records_them(
    api: Any, events: list[Any], workspace: Path, jp_serverapp: Any
) -> None:
    run_id = await start(api, "sleep 120")
    manager = jp_serverapp.web_app.settings["codeyard_exec"]
    await manager.shutdown()
    end = (await finished(events, run_id))[-1]
    assert end["state"] == "cancelled"
    assert exec_records(workspace, run_id)[-1]["state"] == "cancelled"


# ---- patch_only and turned off ------------------------------------------------------------


class TestPatchOnly:
    """In `patch_only` mode exec runs, and what it writes is an `external.change` record."""

    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(
            CodeyardApp={"external_changes": True, "patch_only": True}, CodeyardExec=EXEC
        )

    async def test_exec_writes_are_recorded_as_external_changes(
        self, api: Any, events: list[Any], workspace: Path, jp_serverapp: Any
    ) -> None:
        (app,) = jp_serverapp.extension_manager.extension_apps["codeyard.server_extension"]
        assert app.patch_only is True
        watcher = app.change_records.watcher
        assert await asyncio.to_thread(watcher.ready.wait, WAIT)
        run_id = await start(api, "printf 'from exec\\n' > written-by-exec.txt")
        assert (await finished(events, run_id))[-1]["exit_code"] == 0
        digest = hashlib.sha256(b"from exec\n").hexdigest()
        deadline = time.monotonic() + WAIT
        while True:
            status, page = await api("audit", params={"limit": 1000})
            assert status == 200
            found = [
                r
                for r in page["records"]
                if r["action"] == "external.change" and "written-by-exec.txt" in r["paths"]
            ]
            if found:
                break
            assert time.monotonic() < deadline, page
            await asyncio.sleep(0.1)
        assert found[0]["sha256_after"] == {"written-by-exec.txt": digest}


class TestTurnedOff:
    """`CodeyardExec.enabled = False`: every run is refused with a clear 403."""

    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(CodeyardExec={"enabled": False})

    async def test_exec_is_refused(self, api: Any, workspace: Path) -> None:
        status, body = await api("exec", body={"command": "touch made.txt"})
        assert status == 403 and body["error"] == "exec_disabled", body
        assert "turned off" in body["message"]
        assert not (workspace / "made.txt").exists()
