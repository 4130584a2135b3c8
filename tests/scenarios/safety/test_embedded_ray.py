"""The embedded Ray of `clonesweep run`: it listens on loopback only (checked on the real
sockets of every process of the sweep while trials run), and none of its processes outlives
a driver killed by SIGKILL.

The sweep's processes are those under the driver in the process tree, and those carrying
the test's marker in their environment. The marker alone misses some: Ray's setproctitle
zeroes the start of a process's /proc/PID/environ, up to the first variable the process
changed before it set its title (``import ray`` sets RAY_CLIENT_MODE), and the raylet hands
its agents the environment in an order of its own that depends on which variables there
are. A local Ray started with RAY_CLIENT_MODE already set (as by a test process that
imported ray first, as a full run does) and 7 more variables: both agents' environ had lost
the marker; without them it was kept (the runtime-env agent was missed in 2 of 5 runs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from safety_sockets import alive, descendants, listening, start_time

from tests_support import pids_with_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MARKER = "CLONESWEEP_TEST_SAFETY"


def _wait(what: str, check: Callable[[], bool], deadline_s: float) -> None:
    """Poll ``check`` until it holds; fail once ``deadline_s`` has passed."""
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s:g} s waiting for {what}")
        time.sleep(0.1)


def _reporting(journal: Path) -> tuple[int, int]:
    """(running trials, trials with an epoch reported) in the run folder's journal, read
    without writing; (0, 0) before the study exists."""
    import optuna

    from clonesweep.orchestrator.study.journal import journal_storage

    if not journal.exists():
        return 0, 0
    try:
        got = optuna.load_study(study_name="loop", storage=journal_storage(journal)).trials
    except KeyError:  # the study is not created yet
        return 0, 0
    running = sum(t.state is optuna.trial.TrialState.RUNNING for t in got)
    return running, sum(bool(t.intermediate_values) for t in got)


@pytest.fixture
def marked_driver(sweep_file: Any) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """`clonesweep run` in its own process; every process it starts carries the marker."""
    marker = uuid.uuid4().hex
    temp = Path(tempfile.mkdtemp(prefix="cssafe-", dir="/tmp"))
    path = sweep_file(name="loop", trials=4, parallel=2, epochs=300, limit=1500)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({MARKER: marker, "RAY_TMPDIR": str(temp), "RAY_USAGE_STATS_ENABLED": "0"})
    driver = subprocess.Popen([sys.executable, "-m", "clonesweep", "run", str(path)],
                              cwd=path.parent, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        yield driver, marker, path.parent / "runs" / "loop" / "study.log"
    finally:
        for pid in {*pids_with_env(MARKER, marker), *descendants(driver.pid)} - {driver.pid}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        driver.kill()
        driver.communicate()
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


def test_the_sweep_listens_on_loopback_only_and_dies_with_its_driver(
        marked_driver: tuple[subprocess.Popen[str], str, Path]) -> None:
    driver, marker, db = marked_driver

    def trials_run() -> bool:
        if driver.poll() is not None:
            raise AssertionError(f"the driver exited {driver.returncode}: "
                                 f"{driver.communicate()[1][-3000:]}")
        # both trials running and epochs reported: every worker actor and the broker are up
        return _reporting(db) == (2, 2)

    _wait("two trials reporting epochs", trials_run, deadline_s=300)
    # Every process's sockets, read until each expected listener has shown up (an agent may
    # bind its port a moment after the trials start); every socket seen on any look counts
    # for the loopback check.
    seen: dict[tuple[int, str, int], Any] = {}

    known: dict[int, int] = {}  # pid -> start time, of every process of the sweep seen

    def all_listening() -> bool:
        tree = descendants(driver.pid)
        known.update(tree)
        for pid in pids_with_env(MARKER, marker):
            started = start_time(pid)
            if pid not in known and started is not None:
                known[pid] = started
        for s in listening(sorted(known)):
            seen[(s.pid, s.address, s.port)] = s
        got = {s.name for s in seen.values()}
        return ({"gcs_server", "raylet", "ray::RuntimeEnvAgent"} <= got
                and sum(1 for n in got if n.startswith("ray::_WorkerActor")) == 2
                and sum(1 for n in got if n.startswith("ray::_Broker")) == 1)

    try:  # a loaded machine (CI) can take minutes; a failure names what was missing
        _wait("the sweep's listeners", all_listening, deadline_s=300)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; listening so far: "
                             f"{sorted({s.name for s in seen.values()})}") from None
    sockets = list(seen.values())
    names = sorted(s.name for s in sockets)
    # the driver's own gRPC server, GCS, raylet (2 ports), the runtime-env agent, both worker
    # actors and the pruning broker (Ray names an actor's process ray::<Class>[.<method>])
    assert driver.pid in {s.pid for s in sockets}, sockets
    assert {"gcs_server", "raylet", "ray::RuntimeEnvAgent"} <= set(names), names
    agent = [s for s in sockets if s.name == "ray::RuntimeEnvAgent"]
    assert all(s.address == "127.0.0.1" for s in agent), agent
    assert sum(1 for n in names if n.startswith("ray::_Broker")) == 1, names
    assert sum(1 for n in names if n.startswith("ray::_WorkerActor")) == 2, names
    exposed = [s for s in sockets if not s.loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"

    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    left: list[int] = []

    def all_gone() -> bool:
        left[:] = sorted({pid for pid, started in known.items() if alive(pid, started)}
                         | set(pids_with_env(MARKER, marker)))
        return not left

    try:
        _wait("every process of the sweep to exit", all_gone, deadline_s=10)
    except AssertionError:
        names_left = [Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in left
                      if Path(f"/proc/{pid}").exists()]
        raise AssertionError(f"alive 10 s after the driver's SIGKILL: {names_left}") from None
