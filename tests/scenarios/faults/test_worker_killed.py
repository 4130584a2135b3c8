"""Fault 1: a worker process SIGKILLed mid-trial, on a real local Ray.

The test finds the worker actor's process among this process's own descendants (the Ray
that the ``ray_cluster`` fixture started: never another session's), kills it while it runs
a trial, and checks that the trial was retried with the same params and seed on the
restarted actor, told once, and that the sweep met its budget.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from faults_support import assert_invariants, wait_for

from clonesweep.orchestrator import base_model_config, run_sweep
from clonesweep.orchestrator.backends.ray.backend import RayBackend
from clonesweep.orchestrator.study.storage import load_study, storage_url
from clonesweep.orchestrator.sweep import NullProgress
from clonesweep.spec import load_sweep

# The bounds below only guard against a hang: at a load of 12 on 2 cores a worker's start
# (TensorFlow's import) took minutes.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def _title(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
                .decode(errors="replace"))
    return ""


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def own_workers(busy: bool) -> list[int]:
    """Our worker actors' pids: busy ones run a trial (``ray::_WorkerActor.run``)."""
    want = "ray::_WorkerActor.run" if busy else "ray::_WorkerActor"
    return [p for p in _descendants(os.getpid()) if _title(p).startswith(want)]


def kill_busy_worker(ready: Callable[[], bool] = lambda: True, settle_s: float = 0.0,
                     timeout: float = 480.0) -> int | None:
    """SIGKILL a worker actor that runs a trial, once ``ready()`` holds and ``settle_s``
    later if it still runs one; its pid, or None at ``timeout``. Looks every 20 ms (not
    wait_for's 0.5 s): with traced graphs reused, a test trial lasts well under a second."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready() and own_workers(busy=True):
            time.sleep(settle_s)
            busy = own_workers(busy=True)
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                return busy[0]
        time.sleep(0.02)
    return None


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.retried: list[tuple[int, str]] = []

    def on_trial_end(self, result: Any, counts: Any, best: Any, retried: bool) -> None:
        if retried:
            self.retried.append((result.number, result.reason.value))


def test_worker_killed_mid_trial_is_retried_with_same_params_and_seed(
        ray_cluster: str, sweep_file: Any) -> None:
    # 100 epochs: a warm trial here takes ~0.7 s with reused graphs (40 took 0.4 s, and the
    # kill could fall between trials).
    spec = load_sweep(sweep_file(name="wkill", trials=3, parallel=1, epochs=100, limit=1500))
    killed: list[int] = []

    def kill_one() -> None:
        pid = kill_busy_worker(settle_s=0.3)  # 0.3 s into its epochs
        if pid is not None:
            killed.append(pid)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    recorder = Recorder()
    outcome = run_sweep(spec, base_model_config(spec),
                        RayBackend(resources=spec.sweep.resources), recorder)
    killer.join(timeout=5)
    assert killed, "no worker was killed"

    assert recorder.retried and recorder.retried[0][1] == "worker_died"
    number = recorder.retried[0][0]
    trials = load_study("wkill", storage_url(spec)).get_trials()
    messages = [(t.number, t.user_attrs.get("message")) for t in trials]
    assert all(t.state is optuna.trial.TrialState.COMPLETE for t in trials), messages
    assert_invariants(trials, budget=3)
    assert outcome.counts.finished == 3 and outcome.counts.retried == 1
    retried = trials[number]
    assert retried.state is optuna.trial.TrialState.COMPLETE
    assert retried.user_attrs["attempt"] == 1
    assert retried.user_attrs["seed"] == trials[number].user_attrs["seed"]
    assert len(retried.user_attrs["history"]["loss"]) == 100  # a complete history
    # No worker actor of this sweep outlives run_sweep.
    wait_for("the worker actors to exit", lambda: not own_workers(busy=False), timeout=180)
