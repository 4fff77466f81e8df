"""Running commands in the workspace: start, stream, time out, cancel, record.

`ExecManager` owns every run of one server. A run is a child process in a session (and so
a process group) of its own, with stdin closed and stdout and stderr read on the event
loop. Its output becomes events of the `exec` schema (`events/schemas/exec.yaml`), emitted
on the server's `event_logger`, which the events socket relays to the user's browser; the
last part of it is also kept in memory for `GET exec/<run_id>`.

The promises:

- **Ends are bounded.** A run stops when its command exits, after `timeout` seconds, or on
  cancel. Stopping is SIGTERM to the whole process group, then SIGKILL after
  `kill_grace` seconds: a test runner's workers or a shell's children are in the group
  and go with it. When the command itself exits, whatever it left in its group is killed
  too, so no orphan keeps the output pipes (or the CPU) after the run is reported done.
- **Bounded resources.** At most `max_concurrent` runs at once (more answer 429), at most
  `output_cap` bytes streamed per run plus a `output_tail` of its end (`output.RunOutput`),
  at most `keep_finished` finished runs remembered.
- **The audit never sees output or the command text.** `exec.start` (before the process
  exists; a run that cannot be recorded does not start) and `exec.end` records hold the
  command's sha256, the folder, the exit code, the state, the duration and byte counts.
- **Secrets stay out of the child's environment** where they are the server's own: the
  variables matched by `env_exclude` (the Hub API token above all) are removed. This keeps
  them out of output that is streamed to a browser and may be sent to a model; it is no
  sandbox (a kernel in the same workspace runs as the same user).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import os
import signal
import subprocess
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from traitlets import Bool, Float, Int, List, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..audit import AuditLog
from ..errors import CodeyardError, bad_request, not_found
from ..paths import WorkspacePaths
from .output import Chunk, RunOutput

log = logging.getLogger(__name__)

SCHEMA_ID = "https://codeyard.dev/events/exec/v1"
#: The schema file the events socket registers with every other one in its folder.
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "events" / "schemas" / "exec.yaml"

State = Literal["starting", "running", "exited", "timeout", "cancelled", "failed"]
FINAL_STATES = frozenset({"exited", "timeout", "cancelled", "failed"})

MAX_COMMAND_CHARS = 10_000
MAX_ARGS = 1000
#: Most bytes one read takes from a pipe; one output event carries at most this much.
READ_SIZE = 64 * 1024
#: Seconds the pipes may stay open after the process group was killed (a process that
#: left the group with `setsid` may hold them); then the run ends without the rest.
DRAIN_TIMEOUT = 2.0


class CodeyardExec(LoggingConfigurable):
    """Settings of `codeyard/api/exec` (`c.CodeyardExec.*`)."""

    enabled = Bool(
        True,
        help="""Whether `codeyard/api/exec` runs commands. When False every exec request
        answers 403 `exec_disabled`. `patch_only` does not turn exec off: a run's writes
        are recorded as `external.change` like a kernel's (docs/exec.md).""",
    ).tag(config=True)

    max_concurrent = Int(
        4,
        help="""Most runs going at once in this server; one more answers 429
        `too_many_runs` until one ends. Each run is a process tree that takes CPU and
        memory from the workspace.""",
    ).tag(config=True)

    default_timeout = Float(
        600.0, help="""Seconds a run may take when the request names no `timeout`."""
    ).tag(config=True)

    max_timeout = Float(
        3600.0,
        help="""Largest `timeout` a request may ask for, in seconds; more answers 400.""",
    ).tag(config=True)

    kill_grace = Float(
        5.0,
        help="""Seconds between SIGTERM and SIGKILL when a run is cancelled or times out:
        time for a test runner to stop its workers and print its summary.""",
    ).tag(config=True)

    output_cap = Int(
        1024 * 1024,
        help="""Bytes of a run's output (stdout and stderr together) streamed and kept. Past
        it a notice marks the cut, the rest is counted but not streamed, and only its last
        `output_tail` bytes are streamed once the command ends. The command keeps running:
        its exit code still counts.""",
    ).tag(config=True)

    output_tail = Int(
        16 * 1024,
        help="""Bytes of the end of a run's output kept past `output_cap` and streamed when
        the command ends (a test summary is at the end). 0 keeps none.""",
    ).tag(config=True)

    keep_finished = Int(
        50,
        help="""How many finished runs `GET exec/<run_id>` still knows; older ones answer
        404. Kept in memory only: a server restart forgets every run.""",
    ).tag(config=True)

    chunk_interval = Float(
        0.05,
        help="""Seconds a stream waits after sending a chunk before reading the next, so a
        command that prints many short lines gives a few larger events instead of one per
        line. The pipe and the reader's buffer hold what is printed meanwhile.""",
    ).tag(config=True)

    shell = Unicode(
        "/bin/sh",
        help="""The shell that runs a command given as a string (`[shell, "-c", command]`).
        A command given as a list runs without a shell.""",
    ).tag(config=True)

    env_exclude = List(
        Unicode(),
        default_value=[
            "JUPYTERHUB_API_TOKEN",
            "JPY_API_TOKEN",
            "*TOKEN*",
            "*SECRET*",
            "*PASSWORD*",
            "*PASSWD*",
            "*API_KEY*",
            "*CREDENTIAL*",
        ],
        help="""Environment variables of the server a run does not inherit (shell-style
        patterns, matched without regard to case). The server's environment holds the
        user's Hub token and the gateway's; a command's output is streamed to the browser
        and may be sent to the model by "Explain this failure".""",
    ).tag(config=True)

    @validate(
        "max_concurrent",
        "default_timeout",
        "max_timeout",
        "output_cap",
        "keep_finished",
    )
    def _positive(self, proposal: Any) -> Any:
        if proposal["value"] <= 0:
            raise ValueError(f"{proposal['trait'].name} must be positive")
        return proposal["value"]

    @validate("kill_grace", "output_tail", "chunk_interval")
    def _not_negative(self, proposal: Any) -> Any:
        if proposal["value"] < 0:
            raise ValueError(f"{proposal['trait'].name} must be >= 0")
        return proposal["value"]


@dataclass(frozen=True)
class Command:
    """What to run. `sha256` is what the audit keeps: of the UTF-8 string for a shell
    command, of the arguments joined by NUL bytes for an argv list."""

    argv: list[str]
    shell: bool
    display: str
    sha256: str


def parse_command(value: Any, shell: str) -> Command:
    """A shell string or a list of arguments; anything else is a 400."""
    if isinstance(value, str):
        if not value.strip():
            raise bad_request("command must not be empty", field="command")
        if len(value) > MAX_COMMAND_CHARS:
            raise bad_request(f"command is longer than {MAX_COMMAND_CHARS} characters")
        if "\x00" in value:
            raise bad_request("command must not contain a NUL byte", field="command")
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        return Command([shell, "-c", value], True, value, digest)
    if isinstance(value, list) and value:
        if len(value) > MAX_ARGS or not all(isinstance(a, str) for a in value):
            raise bad_request(
                f"command as a list must hold 1 to {MAX_ARGS} strings", field="command"
            )
        if any("\x00" in a for a in value) or not value[0]:
            raise bad_request("command arguments must not contain NUL bytes", field="command")
        if sum(len(a) for a in value) > MAX_COMMAND_CHARS:
            raise bad_request(f"command is longer than {MAX_COMMAND_CHARS} characters")
        joined = "\x00".join(value).encode("utf-8", "surrogatepass")
        return Command(list(value), False, " ".join(value), hashlib.sha256(joined).hexdigest())
    raise bad_request(
        "command must be a shell string or a non-empty list of strings", field="command"
    )


@dataclass
class Run:
    """One command run; everything `GET exec/<run_id>` answers."""

    id: str
    command: Command
    cwd: str
    user: str
    timeout: float
    output: RunOutput
    state: State = "starting"
    started: float = field(default_factory=time.time)
    exit_code: int | None = None
    signal: str | None = None
    duration: float | None = None
    pid: int | None = None
    stop_reason: State | None = None
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def next_seq(self) -> int:
        return self.output.numbering()

    @property
    def seq(self) -> int:
        """The number of the run's latest event."""
        return self.output.numbering.last

    def to_json(self, since: int = 0, tail_chars: int | None = None) -> dict[str, Any]:
        """The run's summary and its kept output chunks numbered above `since`."""
        body: dict[str, Any] = {
            "run_id": self.id,
            "state": self.state,
            "command": self.command.display,
            "command_sha256": self.command.sha256,
            "cwd": self.cwd,
            "timeout": self.timeout,
            "started": self.started,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "duration": self.duration,
            "seq": self.seq,
            "output_bytes": self.output.total_bytes,
            "output_cap": self.output.cap,
            "truncated": self.output.truncated,
            "chunks": [c.to_json() for c in self.output.since(since)],
        }
        if tail_chars is not None:
            body["tail"] = self.output.tail_text(tail_chars)
        return body


def child_env(exclude: list[str], run_id: str) -> dict[str, str]:
    """The server's environment without the variables `exclude` matches, plus the run's id
    and unbuffered Python output (so a Python command's prints stream as they happen)."""
    patterns = [p.upper() for p in exclude]
    env = {
        k: v
        for k, v in os.environ.items()
        if not any(fnmatch.fnmatchcase(k.upper(), p) for p in patterns)
    }
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["CODEYARD_RUN_ID"] = run_id
    return env


class _ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Tells of the process's exit as it happens. `Process.wait()` (Python 3.11) returns
    only once the pipes are closed too, which a background child can hold for ever."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def spawn(
    argv: list[str], *, cwd: str, env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, asyncio.Future[None]]:
    """Start `argv` in a session of its own, stdin closed, stdout and stderr piped; return
    the process and a future done when it exits (its pipes may still be open: closing
    the process's transport closes them)."""
    loop = asyncio.get_running_loop()
    protocol = _ExitProtocol(READ_SIZE, loop)
    transport, _ = await loop.subprocess_exec(
        lambda: protocol,
        *argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    return asyncio.subprocess.Process(transport, protocol, loop), protocol.exited


Emit = Any  # the server's `jupyter_events.EventLogger`, or None


class ExecManager:
    """Starts and tracks the runs of one server. Every method runs on the event loop."""

    def __init__(
        self,
        paths: WorkspacePaths,
        config: CodeyardExec,
        audit: AuditLog,
        *,
        event_logger: Emit,
        state: Any = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.audit = audit
        self.event_logger = event_logger
        self.state = state
        self.log = log or logging.getLogger(__name__)
        self.runs: OrderedDict[str, Run] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- events ----------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Register the exec schema unless it is (the events socket registers every schema
        of its folder at start; this makes exec work, and testable, without it)."""
        logger = self.event_logger
        if logger is not None and SCHEMA_ID not in logger.schemas:
            logger.register_event_schema(SCHEMA_PATH)

    def _emit(self, data: dict[str, Any]) -> None:
        if self.event_logger is None:
            return
        try:
            self.ensure_schema()
            self.event_logger.emit(schema_id=SCHEMA_ID, data=data)
        except Exception:  # a listener or the schema: the run itself goes on
            self.log.exception("codeyard exec: could not emit an event of run %s", data["run_id"])

    def _emit_chunks(self, run: Run, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            self._emit(
                {
                    "run_id": run.id,
                    "kind": "output",
                    "seq": chunk.seq,
                    "stream": chunk.stream,
                    "text": chunk.text,
                }
            )

    # ---- requests --------------------------------------------------------------------

    def active(self) -> int:
        return sum(1 for r in self.runs.values() if r.state not in FINAL_STATES)

    def get(self, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if run is None:
            raise not_found(
                f"no run {run_id} (runs are kept in memory: the last "
                f"{self.config.keep_finished} finished ones, until the server restarts)"
            )
        return run

    def parse_timeout(self, value: Any) -> float:
        if value is None:
            return float(self.config.default_timeout)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad_request("timeout must be a number of seconds", field="timeout")
        if not 0 < value <= self.config.max_timeout:
            raise bad_request(
                f"timeout must be more than 0 and at most {self.config.max_timeout:g} seconds",
                field="timeout",
            )
        return float(value)

    def resolve_cwd(self, value: Any) -> str:
        """The run's folder, checked like every path of the API (relative, no `..`, no
        symlink out of the root), and not inside `.git/` or the state folder."""
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise bad_request("cwd must be a string", field="cwd")
        resolved = self.paths.resolve(value, allow_root=True, for_write=True)
        if not resolved.abs.exists():
            raise not_found(f"cwd does not exist: {resolved.rel or '.'}")
        if not resolved.abs.is_dir():
            raise bad_request(f"cwd is not a folder: {resolved.rel}", field="cwd")
        return resolved.rel

    async def start(self, command: Command, cwd: str, seconds: float, *, user: str) -> Run:
        """Record and start a run that may take `seconds`; it goes on in a task of its own.
        429 past the bound."""
        if not self.config.enabled:
            raise CodeyardError(
                403, "exec_disabled", "running commands is turned off in this workspace"
            )
        if self.active() >= self.config.max_concurrent:
            raise CodeyardError(
                429,
                "too_many_runs",
                f"{self.config.max_concurrent} commands are already running in this "
                "workspace; wait for one to end or cancel it",
                limit=self.config.max_concurrent,
            )
        run_id = uuid.uuid4().hex
        run = Run(
            id=run_id,
            command=command,
            cwd=cwd,
            user=user,
            timeout=seconds,
            output=RunOutput(self.config.output_cap, self.config.output_tail),
        )
        # Holds its slot from here: the bound counts runs still being recorded.
        self.runs[run_id] = run
        try:
            await asyncio.to_thread(self._record_start, run)
        except BaseException as exc:
            del self.runs[run_id]
            translated = self._translate(exc)
            if translated is not None:
                raise translated from None
            raise
        # The duration counts from before the spawn: the command may run for a while before
        # this coroutine, or the supervising task, gets the loop back.
        begun = time.monotonic()
        try:
            proc, exited = await spawn(
                command.argv,
                cwd=str(self.paths.root / cwd) if cwd else str(self.paths.root),
                env=child_env(list(self.config.env_exclude), run_id),
            )
        except OSError as exc:
            del self.runs[run_id]
            run.state = "failed"
            try:
                await asyncio.to_thread(self._record_end, run, "failed")
            except Exception:
                self.log.exception("codeyard exec: the failed start of %s was not recorded", run_id)
            if isinstance(exc, FileNotFoundError | PermissionError):
                raise CodeyardError(
                    400,
                    "command_not_found",
                    f"{command.argv[0]!r} cannot be run here ({exc.__class__.__name__})",
                ) from None
            raise CodeyardError(
                500, "exec_failed", f"the command could not start ({exc.__class__.__name__})"
            ) from None
        except BaseException:
            del self.runs[run_id]
            raise
        run.pid = proc.pid
        run.state = "running"
        run.started = time.time()
        self._emit(
            {
                "run_id": run.id,
                "kind": "start",
                "seq": run.next_seq(),
                "command": command.display,
                "cwd": cwd,
                "timeout": seconds,
            }
        )
        task = asyncio.create_task(
            self._supervise(run, proc, exited, begun), name=f"codeyard-exec-{run_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._forget_old()
        return run

    def cancel(self, run_id: str) -> Run:
        """Ask a running run to stop (SIGTERM, then SIGKILL); 409 if it has ended."""
        run = self.get(run_id)
        if run.state in FINAL_STATES:
            raise CodeyardError(
                409,
                "run_finished",
                f"run {run_id} has already ended ({run.state})",
                state=run.state,
            )
        if run.stop_reason is None:
            run.stop_reason = "cancelled"
        run.stop_event.set()
        return run

    async def shutdown(self) -> None:
        """Stop every run (the server is stopping) and wait for their records."""
        for run in list(self.runs.values()):
            if run.state not in FINAL_STATES:
                run.stop_reason = run.stop_reason or "cancelled"
                run.stop_event.set()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.kill_grace + 10)

    # ---- a run -----------------------------------------------------------------------

    async def _pump(self, run: Run, name: Literal["stdout", "stderr"], pipe: Any) -> None:
        while True:
            data = await pipe.read(READ_SIZE)
            if not data:
                return
            self._emit_chunks(run, run.output.feed(name, data))
            if self.config.chunk_interval:
                await asyncio.sleep(self.config.chunk_interval)

    async def _supervise(
        self,
        run: Run,
        proc: asyncio.subprocess.Process,
        exited: asyncio.Future[None],
        begun: float,
    ) -> None:
        """Follow `proc` to its end; `begun` is the monotonic time it was spawned at."""
        pumps = [
            asyncio.create_task(self._pump(run, "stdout", proc.stdout)),
            asyncio.create_task(self._pump(run, "stderr", proc.stderr)),
        ]
        waiter: asyncio.Future[Any] = asyncio.ensure_future(exited)
        stopper: asyncio.Future[Any] = asyncio.create_task(run.stop_event.wait())
        final: State = "exited"
        try:
            done, _ = await asyncio.wait(
                {waiter, stopper}, timeout=run.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter not in done:
                final = (run.stop_reason or "timeout") if stopper in done else "timeout"
                await self._stop_group(proc, waiter)
            run.duration = round(time.monotonic() - begun, 3)
            # Whatever the command left in its group would hold the pipes open.
            self._kill_group(proc.pid, signal.SIGKILL)
            _, pending = await asyncio.wait(pumps, timeout=DRAIN_TIMEOUT)
            for pump in pending:
                pump.cancel()
            if pending:  # a process that left the group holds the pipes: let them go
                proc._transport.close()  # type: ignore[attr-defined]
        except BaseException:
            self._kill_group(proc.pid, signal.SIGKILL)
            for task in (*pumps, waiter):
                task.cancel()
            final = "failed"
            raise
        finally:
            stopper.cancel()
            code = proc.returncode
            if code is not None and code < 0:
                run.signal = signal.Signals(-code).name
                run.exit_code = None
            else:
                run.exit_code = code
            if run.duration is None:
                run.duration = round(time.monotonic() - begun, 3)
            self._emit_chunks(run, run.output.finish())
            run.state = final
            self._emit(
                {
                    "run_id": run.id,
                    "kind": "exit",
                    "seq": run.next_seq(),
                    "state": final,
                    "exit_code": run.exit_code,
                    "signal": run.signal,
                    "duration": run.duration,
                    "output_bytes": run.output.total_bytes,
                    "truncated": run.output.truncated,
                }
            )
            run.done.set()
            try:
                await asyncio.to_thread(self._record_end, run, final)
            except Exception:
                self.log.exception("codeyard exec: the end of run %s was not recorded", run.id)
            self._forget_old()

    async def _stop_group(
        self, proc: asyncio.subprocess.Process, waiter: asyncio.Future[None]
    ) -> None:
        self._kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.config.kill_grace)
        except TimeoutError:
            self._kill_group(proc.pid, signal.SIGKILL)
            await waiter

    @staticmethod
    def _kill_group(pgid: int, sig: signal.Signals) -> None:
        # The group is the session `start_new_session` made for this run alone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _forget_old(self) -> None:
        finished = [rid for rid, r in self.runs.items() if r.state in FINAL_STATES]
        for rid in finished[: max(0, len(finished) - self.config.keep_finished)]:
            del self.runs[rid]

    # ---- audit -----------------------------------------------------------------------

    def _translate(self, exc: BaseException) -> CodeyardError | None:
        """A state-folder error as the 507 the rest of the API answers, else None."""
        if isinstance(exc, CodeyardError):
            return exc
        if isinstance(exc, OSError) and self.state is not None:
            translated: CodeyardError | None = self.state.translate(exc)
            return translated
        return None

    def _record_start(self, run: Run) -> None:
        if self.state is not None:
            self.state.ensure()
        self.audit.append(
            user=run.user,
            action="exec.start",
            paths=[run.cwd or "."],
            run_id=run.id,
            command_sha256=run.command.sha256,
            command_kind="shell" if run.command.shell else "argv",
            timeout=run.timeout,
        )

    def _record_end(self, run: Run, final: str) -> None:
        if self.state is not None:
            self.state.ensure()
        self.audit.append(
            user=run.user,
            action="exec.end",
            paths=[run.cwd or "."],
            run_id=run.id,
            command_sha256=run.command.sha256,
            state=final,
            exit_code=run.exit_code,
            signal=run.signal,
            duration=run.duration,
            output_bytes=run.output.total_bytes,
            truncated=run.output.truncated,
        )
