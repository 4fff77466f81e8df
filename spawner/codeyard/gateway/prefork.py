"""Run the gateway as several processes on one port: a supervisor and its forked workers.

Why several processes: one Python process relays every stream on one event loop. When the
machine's cores are busy (vLLM itself, workspaces, other services), that one process waits
for a CPU slice while tokens queue behind it, which added 15-23 ms to time to first token at
16 streams. N processes get N chances at a slice, and a stream waits only for the process
that holds its connection.

Why SO_REUSEPORT, one listening socket per worker: with one shared socket, the worker that
wakes first accepts every waiting connection in one go (tornado's accept loop drains the
backlog), so a burst of 16 keep-alive connections all lands on one process and stays there.
With one socket per worker in a reuse-port group the kernel spreads new connections over the
workers by their address hash, and each connection keeps its worker for its lifetime.

The supervisor binds the sockets before forking (so a port in use fails at start, and a
restarted worker takes over the same socket and whatever queued on it), forks the workers,
forwards SIGTERM/SIGINT to them, restarts a worker that dies, and calls `on_exit(pid)` for
each reaped worker so its leftovers (ledger reservations, live metric files) are cleaned up.
Workers ask the kernel for SIGTERM if the supervisor dies, so none outlives it.
The supervisor starts no threads and no event loop: forking a process that has them copies
locks in whatever state other threads held them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from tornado.netutil import bind_sockets

PR_SET_PDEATHSIG = 1

# A worker that dies sooner than this after its start is restarted only after this long,
# so a worker that cannot start does not fork in a tight loop.
MIN_LIFETIME = 1.0


def reuse_port_sockets(count: int, port: int, address: str) -> list[list[socket.socket]]:
    """`count` sets of listening sockets on (address, port), all in one SO_REUSEPORT group."""
    return [bind_sockets(port, address, reuse_port=True) for _ in range(count)]


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's SIGTERM still stops us
        pass


class Supervisor:
    """Forks one worker per socket set and keeps them running until told to stop."""

    def __init__(
        self,
        sockets: list[list[socket.socket]],
        worker: Callable[[int, list[socket.socket]], None],
        on_exit: Callable[[int], None],
        log: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self.sockets = sockets
        self.worker = worker
        self.on_exit = on_exit
        self.log = log
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
        self.stopping = False

    def _fork(self, index: int) -> None:
        pid = os.fork()
        if pid:
            self.children[pid] = (index, time.monotonic())
            return
        # The worker: default signal handling until its event loop installs its own.
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _die_with_parent()
            if os.getppid() == 1:  # the supervisor died between fork and prctl
                os._exit(1)
            for other, socks in enumerate(self.sockets):
                if other != index:
                    for sock in socks:
                        sock.close()
            self.worker(index, self.sockets[index])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            self.log.exception("gateway worker %d failed", index)
        finally:
            logging.shutdown()
            os._exit(code)

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self) -> int:
        """Fork the workers and supervise them; returns once all have exited after a stop."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for index in range(len(self.sockets)):
            self._fork(index)
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index, started = self.children.pop(pid, (-1, 0.0))
            try:
                self.on_exit(pid)
            except Exception:
                self.log.exception("cleaning up after gateway worker %d (pid %d)", index, pid)
            if self.stopping or index < 0:
                continue
            self.log.error(
                "gateway worker %d (pid %d) exited (%s); starting it again",
                index,
                pid,
                _describe(status),
            )
            lived = time.monotonic() - started
            if lived < MIN_LIFETIME:
                time.sleep(MIN_LIFETIME - lived)
            if not self.stopping:
                self._fork(index)
        for socks in self.sockets:
            for sock in socks:
                sock.close()
        return 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"code {os.waitstatus_to_exitcode(status)}"
