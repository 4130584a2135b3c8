"""Fault 4 and 6: the driver SIGKILLed mid-sweep, a second driver refused, then resume.

Driver A runs a sweep in its own process with its own embedded Ray. While it runs, driver B
on the same sweep is refused (exit 1: A's lease is fresh). A is killed with SIGKILL while
trials run; `clonesweep resume --add-trials 2` then fails A's RUNNING trials as
``driver_died``, re-queues their params with the same seed, samples new params (not a replay
of the first run's draws) and finishes the extended budget exactly.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from faults_support import Drivers, assert_invariants, marked_pids, trials, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

S = optuna.trial.TrialState


def test_driver_killed_then_resumed(sweep_file: Any, tmp_path: Path) -> None:
    # Trials long enough (200 epochs, ~10 s on the shared traced graph) that a poll of the
    # study, slow on a loaded machine, cannot miss the window where one trial has finished
    # and another still runs, and that trials still run once driver B has been refused: with
    # 12 epochs the whole sweep once ended between two polls, and with 40 epochs (~2 s a
    # trial once trials stopped tracing their own graphs) A finished before it was killed.
    path = sweep_file(name="crash", trials=6, parallel=2, epochs=200, limit=1500)
    db = tmp_path / "runs" / "crash"  # the run folder
    drivers = Drivers(tmp_path)
    try:
        a = drivers.start("run", str(path))

        def mid_sweep() -> bool:
            if a.poll() is not None:  # A ended (or failed) before it could be killed
                _, err = a.communicate()
                raise AssertionError(f"driver A exited {a.returncode} early: {err[-3000:]}")
            got = trials(db, "crash")
            return (any(t.state is S.COMPLETE for t in got)
                    and any(t.state is S.RUNNING for t in got))

        # A waits on its own Ray, two TensorFlow workers and a 200-epoch trial: at a load of 12
        # on 2 cores that passed 240 s once. The bound only guards against a hang.
        wait_for("a finished and a running trial", mid_sweep, timeout=600)

        b = drivers.run("run", str(path), "--backend", "inprocess")
        assert b.returncode == 1, b.stderr
        assert "another driver is running sweep 'crash'" in b.stderr
        assert f"pid {a.pid}" in b.stderr and "--takeover" in b.stderr

        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)
        before = trials(db, "crash")
        stale = {t.number: t for t in before if t.state is S.RUNNING}
        assert stale, "no trial was running when the driver died"
        drivers.close()  # what A's embedded Ray left behind

        # Same host, dead pid: the lease is stale at once, no --takeover needed.
        resumed = drivers.run("resume", str(path), "--add-trials", "2", "--json",
                              timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        after = trials(db, "crash")
        assert_invariants(after, budget=8)
        for number in stale:
            t = after[number]
            assert t.state is S.FAIL and t.user_attrs["fail_reason"] == "driver_died"

        # New draws after the resume are not a replay of the first run's.
        first_lrs = {t.params["optimizer.learning_rate"] for t in before}
        fresh = [t for t in after if t.number >= len(before)
                 and "requeued_from" not in t.user_attrs]
        assert fresh
        assert all(t.params["optimizer.learning_rate"] not in first_lrs for t in fresh)

        from clonesweep.orchestrator.study.storage import load_study

        lease = load_study("crash", f"journal://{db / 'study.log'}").user_attrs["driver_lease"]
        assert lease["released"] is True and lease["pid"] != a.pid
        # No Ray process of the resumed driver is left behind.
        wait_for("the resumed driver's Ray to stop", lambda: not marked_pids(drivers.marker),
                 timeout=60)
    finally:
        drivers.close()


def test_lease_refuses_takes_over_stale_and_takeover(sweep_file: Any, tmp_path: Path) -> None:
    from clonesweep.errors import SweepFailed
    from clonesweep.orchestrator import base_model_config, run_sweep
    from clonesweep.orchestrator.backends.base import InProcessBackend
    from clonesweep.orchestrator.study.lease import HEARTBEAT_S, STALE_AFTER
    from clonesweep.orchestrator.study.storage import load_study, storage_url
    from clonesweep.orchestrator.sweep import RunOptions
    from clonesweep.spec import load_sweep

    spec = load_sweep(sweep_file(name="lease", trials=1, epochs=1))
    run_sweep(spec, base_model_config(spec), InProcessBackend())
    study = load_study("lease", storage_url(spec))
    now = time.time()
    live = {"host": "elsewhere", "pid": 1, "token": "x", "started": now, "heartbeat": now}
    study.set_user_attr("driver_lease", live)
    more = RunOptions(add_trials=1)
    with pytest.raises(SweepFailed, match=r"another driver is running .*pid 1 on elsewhere"):
        run_sweep(spec, base_model_config(spec), InProcessBackend(), options=more)
    assert len(study.get_trials()) == 1  # refused before anything was asked

    old = now - STALE_AFTER * HEARTBEAT_S - 1
    study.set_user_attr("driver_lease", {**live, "heartbeat": old})
    out = run_sweep(spec, base_model_config(spec), InProcessBackend(), options=more)
    assert out.budget == 2 and out.counts.finished == 1

    study.set_user_attr("driver_lease", {**live, "heartbeat": time.time()})
    out = run_sweep(spec, base_model_config(spec), InProcessBackend(),
                    options=RunOptions(takeover=True, add_trials=1))
    assert out.budget == 3 and len(study.get_trials()) == 3
    assert study.user_attrs["driver_lease"]["pid"] == os.getpid()


def test_resume_of_a_sweep_that_never_ran_is_refused(sweep_file: Any, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from clonesweep.cli.main import main

    path = sweep_file(name="never", trials=1, epochs=1)
    assert main(["resume", str(path), "--backend", "inprocess"]) == 1
    assert "never" in capsys.readouterr().err
    assert not any((tmp_path / "runs" / "never" / f).exists() for f in ("study.log", "study.db"))
