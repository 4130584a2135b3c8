"""Fault 12: a long trial whose worker dies resumes from its last epoch checkpoint.

On a real local Ray (the ``ray_cluster`` fixture), a sweep with ``checkpoint_every_s: 0``
writes a checkpoint after every epoch. A callback (``faults_layers.HoldAt``) holds each trial
at the start of its third epoch until the test lets it go; once a trial's checkpoint holds two
epochs and its worker is held there, the test SIGKILLs the worker actor running it (one of
this process's own descendants), then lets the trials go. The driver retries the trial
(``worker_died``, attempt 1) with the same params and seed; the retry must load the
checkpoint, report only the epochs after it, and finish with the whole history. The equality
of a resumed trial with an uninterrupted one is checked without Ray in
tests/unit/workers/test_checkpoint.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from faults_support import assert_invariants, wait_for
from test_worker_killed import Recorder, kill_busy_worker, own_workers

from clonesweep.orchestrator import base_model_config, run_sweep
from clonesweep.orchestrator.backends.ray.backend import RayBackend
from clonesweep.orchestrator.study.storage import load_study, storage_url
from clonesweep.spec import load_sweep
from clonesweep.trials import Intermediate

# The bounds only guard against a hang (see test_worker_killed).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

EPOCHS = 6
HOLD_AT = 2  # the epoch (0-based) each trial waits at until the test lets it go


class Watching(RayBackend):
    """Records every per-epoch report the driver receives, in order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reports: list[tuple[int, int]] = []

    def poll(self, timeout: float) -> list[Any]:
        events = super().poll(timeout)
        self.reports.extend((e.number, e.step) for e in events if isinstance(e, Intermediate))
        return events


def epochs_done(folder: Path) -> tuple[int, int] | None:
    """(trial number, epochs done) of a checkpoint in ``folder``, if there is one."""
    for path in sorted(folder.glob("trial-*.npz")) if folder.exists() else []:
        try:
            with np.load(path, allow_pickle=False) as archive:
                meta = json.loads(str(archive["meta"]))
            return int(meta["number"]), int(meta["epochs_done"])
        except (OSError, ValueError, KeyError):
            continue  # replaced while read
    return None


def test_killed_trial_resumes_from_its_last_checkpoint(ray_cluster: str, sweep_file: Any,
                                                       tmp_path: Path) -> None:
    release = tmp_path / "release"
    hold = f"{{name: 'csfaults>HoldAt', epoch: {HOLD_AT}, release: '{release}'}}"
    spec = load_sweep(sweep_file(
        name="ckpt", trials=2, parallel=1, epochs=EPOCHS,
        model="config: model.json, imports: [faults_layers]",
        training_extra=f"\n  callbacks: [{hold}]",
        sweep_extra="\n  checkpoint_every_s: 0\n  retries: 1"))
    folder = spec.run_folder / "checkpoints"
    killed: list[tuple[int, int]] = []

    def kill_at_the_hold() -> None:
        seen: list[tuple[int, int] | None] = [None]

        def ready() -> bool:
            seen[0] = epochs_done(folder)
            return seen[0] is not None and seen[0][1] >= HOLD_AT
        try:
            if kill_busy_worker(ready, timeout=480) is not None and seen[0] is not None:
                killed.append(seen[0])
        finally:
            release.touch()  # the retry (and the other trial) run on

    killer = threading.Thread(target=kill_at_the_hold, daemon=True)
    killer.start()
    recorder = Recorder()
    backend = Watching(resources=spec.sweep.resources)
    outcome = run_sweep(spec, base_model_config(spec), backend, recorder)
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    number, done_at_kill = killed[0]

    assert recorder.retried == [(number, "worker_died")]
    trials = load_study("ckpt", storage_url(spec)).get_trials()
    assert_invariants(trials, budget=2)
    assert outcome.counts.finished == 2 and outcome.counts.retried == 1
    assert all(t.state is optuna.trial.TrialState.COMPLETE for t in trials), \
        [(t.number, t.user_attrs.get("message")) for t in trials]
    trial = trials[number]
    resumed = trial.user_attrs["resumed_from_epoch"]
    assert trial.user_attrs["attempt"] == 1
    # Killed while held at its third epoch: it resumed after the two checkpointed ones.
    assert done_at_kill == HOLD_AT and resumed == HOLD_AT
    assert all(len(values) == EPOCHS for values in trial.user_attrs["history"].values())
    assert trials[1 - number].user_attrs["resumed_from_epoch"] is None
    # The retry reported only the epochs after its checkpoint: the earlier ones did not run
    # again. The killed attempt reported 0, 1, ... up to where it died (the epoch after its
    # checkpoint at most).
    steps = [step for n, step in backend.reports if n == number]
    tail = EPOCHS - resumed
    head, retry = steps[:-tail], steps[-tail:]
    assert retry == list(range(resumed, EPOCHS)), steps
    assert head == list(range(len(head))) and len(head) <= resumed + 1, steps
    assert all(steps.count(step) == 1 for step in range(resumed)), steps
    # Every trial ended: no checkpoint is left behind.
    assert not list(folder.glob("trial-*.npz"))
    wait_for("the worker actors to exit", lambda: not own_workers(busy=False), timeout=180)
