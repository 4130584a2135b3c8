"""Fault 5: Ctrl-C / SIGTERM. The driver stops asking, lets running trials finish within the
grace period or cancels them (failed as ``interrupted``, params re-queued), exits 130; a
second signal cancels at once; ``resume`` then finishes the budget exactly."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import optuna
import pytest
from faults_support import Drivers, assert_invariants, marked_pids, trials, wait_for

S = optuna.trial.TrialState


def test_sigterm_lets_the_running_trial_finish(sweep_file: Any) -> None:
    from clonesweep.orchestrator import base_model_config, run_sweep
    from clonesweep.orchestrator.backends.base import InProcessBackend
    from clonesweep.orchestrator.study.storage import load_study, storage_url
    from clonesweep.orchestrator.sweep import NullProgress, RunOptions
    from clonesweep.spec import load_sweep

    spec = load_sweep(sweep_file(name="term", trials=4, epochs=3))
    url = storage_url(spec)

    class SignalOnStart(NullProgress):
        def on_trial_start(self, spec: Any) -> None:  # the first trial is submitted
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)  # Ray's own, when the session's Ray is up
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, base_model_config(spec), InProcessBackend(), SignalOnStart(),
                  options=RunOptions(grace=300))
    got = load_study("term", url).get_trials()
    # It stopped asking, and the trial running at the signal finished within the grace.
    assert [t.state for t in got] == [S.COMPLETE], [
        (t.state, t.user_attrs.get("fail_reason"), t.user_attrs.get("message")) for t in got]
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_second_signal_cancels_then_resume_finishes(sweep_file: Any, tmp_path: Path) -> None:
    path = sweep_file(name="intr", trials=3, parallel=2, epochs=1000, limit=1500)
    db = tmp_path / "runs" / "intr"  # the run folder
    drivers = Drivers(tmp_path)
    try:
        a = drivers.start("run", str(path), "--grace", "600")

        def two_running() -> bool:
            # A driver that exited (Ray could not start, ...) fails here at once, saying why.
            if a.poll() is not None:
                raise AssertionError(f"the driver exited {a.returncode} before two trials "
                                     f"ran: {a.communicate()[1][-3000:]}")
            return sum(t.state is S.RUNNING for t in trials(db, "intr")) == 2

        # 240 s was passed at load 57 on 2 cores (a driver's start: Keras, Ray, two workers).
        wait_for("two running trials", two_running, timeout=420)
        a.send_signal(signal.SIGTERM)  # drain: no new trial, wait up to 600 s ...
        a.send_signal(signal.SIGINT)   # ... but a second signal cancels at once
        _, err = a.communicate(timeout=240)
        assert a.returncode == 130, err[-3000:]
        assert "clonesweep resume" in err
        got = trials(db, "intr")
        assert len(got) == 4  # 2 interrupted + 2 re-queued (waiting), nothing else asked
        interrupted = [t for t in got if t.user_attrs.get("fail_reason") == "interrupted"]
        waiting = [t for t in got if t.state is S.WAITING]
        assert len(interrupted) == 2 and len(waiting) == 2
        assert all(t.state is S.FAIL for t in interrupted)
        wait_for("the driver's Ray to stop", lambda: not marked_pids(drivers.marker),
                 timeout=60)

        # Resume (with shorter training, to keep the test short): the re-queued params run
        # first, with their seeds, and the budget is met exactly.
        path.write_text(path.read_text().replace("epochs: 1000", "epochs: 2"))
        done = drivers.run("resume", str(path), timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        after = trials(db, "intr")
        assert_invariants(after, budget=3)
        assert {t.number for t in after if "requeued_from" in t.user_attrs} == \
            {t.number for t in waiting}
    finally:
        drivers.close()
