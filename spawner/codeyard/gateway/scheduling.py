"""The gateway's place in the kernel's scheduler.

The gateway uses a few ms of CPU per call but wakes up about ten times per call, two of them
before the first token reaches the caller. On cores kept busy by vLLM or workspaces every
wake-up of a normal task waits for the running one to yield. Three levers, weakest first:
a short run slice (`set_scheduler_slice`, any user), a lower niceness (`GatewayApp.nice`,
CAP_SYS_NICE), and the round-robin real-time policy (`RealtimeWorker`, CAP_SYS_NICE), under
which a wake-up takes a core from any normal task at once.

A real-time task that never sleeps would keep a core from every normal task, so a worker's
real-time turn is bounded: `RLIMIT_RTTIME` makes the kernel send SIGXCPU once the worker has
run `cpu_limit_ms` without a blocking system call. An event loop that keeps up sleeps in
`epoll_wait` between calls; one that reaches the limit is saturated, so latency is no longer
what it is short of, and `RealtimeWorker` moves it back to the normal policy for
`REALTIME_PAUSE_S` before it tries again. If the loop cannot even run that handler (stuck in
C code), the kernel kills the worker at the hard limit and the supervisor starts another.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import platform
import resource
import signal
import struct
import sys

# Seconds a worker that reached its real-time CPU limit stays under the normal policy.
REALTIME_PAUSE_S = 5.0
# SIGKILL this long after SIGXCPU, for a worker whose handler could not run.
HARD_LIMIT_GRACE_MS = 2000

# sched_setattr(2) by machine; struct sched_attr (version 1, 56 bytes): size, policy, flags,
# nice, priority, runtime (the slice of a SCHED_OTHER task, ns), deadline, period, util_min,
# util_max.
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_SCHED_ATTR = struct.Struct("IIQiIQQQII")


def set_scheduler_slice(ms: float) -> None:
    """Ask the scheduler for a run slice of `ms` for the calling thread (inherited by
    threads and processes it starts), keeping its policy (SCHED_OTHER) and niceness."""
    number = _SCHED_SETATTR.get(platform.machine())
    if number is None or sys.platform != "linux":
        raise OSError(errno.ENOSYS, "sched_setattr is not known on this machine")
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    attr = _SCHED_ATTR.pack(_SCHED_ATTR.size, 0, 0, nice, 0, int(ms * 1e6), 0, 0, 0, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, 0, ctypes.create_string_buffer(attr, len(attr)), 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def set_realtime(priority: int, cpu_limit_ms: int) -> None:
    """Put the calling process under `SCHED_RR` at `priority`, then bound it with
    `RLIMIT_RTTIME`: SIGXCPU after `cpu_limit_ms` of CPU without blocking, SIGKILL
    `HARD_LIMIT_GRACE_MS` later. Both are inherited by the processes it forks. Raises
    PermissionError without CAP_SYS_NICE, leaving both as they were."""
    os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(priority))
    soft = cpu_limit_ms * 1000
    resource.setrlimit(resource.RLIMIT_RTTIME, (soft, soft + HARD_LIMIT_GRACE_MS * 1000))


def set_normal(slice_ms: float) -> None:
    """Back to `SCHED_OTHER` (the niceness is kept), with `slice_ms` asked for again."""
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    if slice_ms > 0:
        # The slice is a refinement; the policy change is what matters here.
        with contextlib.suppress(OSError):
            set_scheduler_slice(slice_ms)


class RealtimeWorker:
    """One worker's real-time turn: entered when its event loop starts, left for
    `REALTIME_PAUSE_S` whenever the kernel reports (SIGXCPU) that the loop ran
    `cpu_limit_ms` without sleeping, then entered again."""

    def __init__(
        self, priority: int, cpu_limit_ms: int, slice_ms: float, log: logging.Logger
    ) -> None:
        self.priority = priority
        self.cpu_limit_ms = cpu_limit_ms
        self.slice_ms = slice_ms
        self.log = log
        self.realtime = False
        self.overruns = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def enter(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Take the real-time policy for this process; False (and a warning) if refused."""
        try:
            set_realtime(self.priority, self.cpu_limit_ms)
        except OSError as exc:
            self.log.warning(
                "cannot run at real-time priority %d (needs CAP_SYS_NICE): %s; "
                "running under the normal policy",
                self.priority,
                exc,
            )
            return False
        self._loop = loop
        loop.add_signal_handler(signal.SIGXCPU, self._overrun)
        self.realtime = True
        return True

    def leave(self) -> None:
        """Back to the normal policy for good (a worker that stops: its teardown may run
        longer than the limit without sleeping)."""
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGXCPU)
            self._loop = None
        if self.realtime:
            set_normal(self.slice_ms)
            self.realtime = False

    def _overrun(self) -> None:
        if not self.realtime or self._loop is None:
            return
        set_normal(self.slice_ms)
        self.realtime = False
        self.overruns += 1
        self.log.warning(
            "gateway worker pid %d ran %d ms without waiting: normal scheduling for %g s",
            os.getpid(),
            self.cpu_limit_ms,
            REALTIME_PAUSE_S,
        )
        self._loop.call_later(REALTIME_PAUSE_S, self._resume)

    def _resume(self) -> None:
        if self._loop is None:
            return  # left for good meanwhile
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(self.priority))
        except OSError as exc:
            self.log.warning("cannot return to real-time priority: %s", exc)
            return
        self.realtime = True
