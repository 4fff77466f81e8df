"""`GatewayApp.realtime_priority`: gateway workers under `SCHED_RR`, bounded by the kernel
(`RLIMIT_RTTIME`). Real kernel, real processes and signals: each case runs in a child
process so the test runner keeps its own policy. CI runs as root; these need CAP_SYS_NICE
and fail, saying so, without it."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time

import pytest
from traitlets import TraitError

from codeyard.gateway.app import GatewayApp


def run_child(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture(autouse=True)
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("these tests need root (CAP_SYS_NICE), as CI runs them")


# Drop to nobody with no real-time allowance, after the imports (the test venv may not be
# readable by nobody).
AS_NOBODY = (
    "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
    "resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))\n"
)


def test_set_realtime_gives_round_robin_and_the_cpu_bound_to_forked_workers() -> None:
    child = run_child(
        "import os, resource\n"
        "from codeyard.gateway.scheduling import set_realtime\n"
        "set_realtime(3, 150)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    print('child', os.sched_getscheduler(0), os.sched_getparam(0).sched_priority,"
        " *resource.getrlimit(resource.RLIMIT_RTTIME), flush=True)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "os._exit(0)\n"  # the interpreter's teardown may itself run past 150 ms
    )
    assert child.returncode == 0, child.stderr
    # Microseconds: SIGXCPU at 150 ms, SIGKILL 2 s later.
    assert child.stdout.split() == ["child", str(os.SCHED_RR), "3", "150000", "2150000"]


def test_a_process_stuck_at_realtime_priority_is_stopped_by_the_kernel() -> None:
    """No handler (stuck before or outside the event loop): SIGXCPU's default action ends
    it, and the supervisor starts another worker."""
    started = time.monotonic()
    child = run_child(
        "from codeyard.gateway.scheduling import set_realtime\n"
        "set_realtime(1, 100)\n"
        "print('spinning', flush=True)\n"
        "while True:\n"
        "    pass\n",
        timeout=20,
    )
    assert child.stdout == "spinning\n"
    assert child.returncode == -signal.SIGXCPU, (child.returncode, child.stderr)
    assert time.monotonic() - started < 10


def test_a_saturated_worker_steps_down_and_comes_back() -> None:
    """A loop that runs 100 ms without sleeping is moved to the normal policy (its niceness
    kept) and returns to real time after the pause; the process survives."""
    child = run_child(
        "import asyncio, logging, os, sys, time\n"
        "from codeyard.gateway import scheduling\n"
        "scheduling.REALTIME_PAUSE_S = 0.5\n"
        "os.setpriority(os.PRIO_PROCESS, 0, -7)\n"
        "log = logging.getLogger('t'); log.addHandler(logging.StreamHandler(sys.stderr))\n"
        "async def main():\n"
        "    worker = scheduling.RealtimeWorker(2, 100, 0.1, log)\n"
        "    assert worker.enter(asyncio.get_running_loop())\n"
        "    print('entered', os.sched_getscheduler(0), flush=True)\n"
        "    end = time.monotonic() + 3\n"
        "    while worker.realtime and time.monotonic() < end:\n"
        "        sum(range(20000))\n"
        "        await asyncio.sleep(0)\n"  # a pass through the loop, never a sleep
        "    print('stepped down', os.sched_getscheduler(0),"
        " os.getpriority(os.PRIO_PROCESS, 0), worker.overruns, flush=True)\n"
        "    await asyncio.sleep(1.0)\n"
        "    print('back', os.sched_getscheduler(0), worker.realtime, flush=True)\n"
        "    worker.leave()\n"
        "    print('left', os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))\n"
        "asyncio.run(main())\n"
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == [
        "entered", str(os.SCHED_RR),
        "stepped", "down", str(os.SCHED_OTHER), "-7", "1",
        "back", str(os.SCHED_RR), "True",
        "left", str(os.SCHED_OTHER), "-7",
    ]  # fmt: skip
    assert "ran 100 ms without waiting: normal scheduling for 0.5 s" in child.stderr


def test_without_the_privilege_nothing_changes() -> None:
    child = run_child(
        "import os, resource\n"
        "from codeyard.gateway.scheduling import set_realtime\n"
        + AS_NOBODY
        + "before = resource.getrlimit(resource.RLIMIT_RTTIME)\n"
        "try:\n"
        "    set_realtime(1, 100)\n"
        "except PermissionError as exc:\n"
        "    print('refused', exc.errno, flush=True)\n"
        "assert resource.getrlimit(resource.RLIMIT_RTTIME) == before\n"
        "print('policy', os.sched_getscheduler(0))\n"
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["refused", "1", "policy", str(os.SCHED_OTHER)]


def test_a_worker_refused_realtime_warns_and_keeps_its_niceness() -> None:
    child = run_child(
        "import asyncio, logging, os, resource, sys\n"
        "from codeyard.gateway.scheduling import RealtimeWorker\n"
        + AS_NOBODY
        + "os.setpriority(os.PRIO_PROCESS, 0, 5)\n"
        "log = logging.getLogger('t'); log.addHandler(logging.StreamHandler(sys.stderr))\n"
        "async def main():\n"
        "    ok = RealtimeWorker(2, 200, 0, log).enter(asyncio.get_running_loop())\n"
        "    print(ok, os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))\n"
        "asyncio.run(main())\n"
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["False", str(os.SCHED_OTHER), "5"]
    assert "cannot run at real-time priority 2 (needs CAP_SYS_NICE)" in child.stderr


@pytest.mark.parametrize(
    ("trait", "value"),
    [("realtime_priority", -1), ("realtime_priority", 100), ("realtime_cpu_limit_ms", 0)],
)
def test_out_of_range_settings_are_refused(trait: str, value: int) -> None:
    with pytest.raises(TraitError, match=trait):
        GatewayApp(**{trait: value})


def test_the_runner_itself_was_left_alone() -> None:
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    assert resource.getrlimit(resource.RLIMIT_RTTIME)[0] == resource.RLIM_INFINITY
