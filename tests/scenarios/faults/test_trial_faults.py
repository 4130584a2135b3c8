"""Faults 7, 8, 9, 10 at sweep level on a real Ray: a NaN loss, a trial that hangs inside an
epoch, an exception in a custom layer, each failed with its reason and not retried (attempt
0); a MemoryError (host OOM, as Ray's OOM killer would report it too: a real OOM is not
practical on a shared test machine) retried once with the same seed, then failed as ``oom``.
The sweep goes on to its budget; a trial after the hang runs on the restarted
worker. The driver runs as its own process so that its Ray workers can import the test's
custom layer (``PYTHONPATH``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
from faults_support import Drivers, assert_invariants, trials

from tests_support import write_sweep

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

S = optuna.trial.TrialState

ENQUEUE = """enqueue:
  - {layers.trap.mode: hang}
  - {layers.trap.mode: nan}
  - {layers.trap.mode: raise}
  - {layers.trap.mode: oom}
  - {layers.trap.mode: ok}"""


def test_nan_hang_and_user_error_fail_with_their_reason(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, name="traps", trials=5, parallel=2, epochs=1,
                       model="factory: faults_layers:build, imports: [faults_layers]",
                       parameters="\n  layers.trap.mode: {values: [ok, nan, raise, hang, oom]}",
                       extra=ENQUEUE, sweep_extra="\n  retries: 1\n  trial_timeout: 2")
    drivers = Drivers(tmp_path)
    # Kept: a PYTHONPATH already set (a worktree's src/) still wins over the installed copy.
    drivers.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).parent), drivers.env.get("PYTHONPATH", "")) if p)
    try:
        done = drivers.run("run", str(path), "--json", timeout=500)
        assert done.returncode == 0, done.stderr[-3000:]
        summary: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])  # JSON lines
        got = trials(tmp_path / "runs" / "traps", "traps")
        assert_invariants(got, budget=5)
        mode = {t.number: t.params["layers.trap.mode"] for t in got}
        by_mode: dict[str, list[optuna.trial.FrozenTrial]] = {}
        for t in got:
            by_mode.setdefault(mode[t.number], []).append(t)
        hang, nan, raised = by_mode["hang"][0], by_mode["nan"][0], by_mode["raise"][0]
        assert hang.state is S.FAIL and hang.user_attrs["fail_reason"] == "timeout"
        assert nan.state is S.FAIL and nan.user_attrs["fail_reason"] == "nan_loss"
        assert raised.state is S.FAIL and raised.user_attrs["fail_reason"] == "user_error"
        message = raised.user_attrs["message"]
        assert "trap: user code failed on purpose" in message and "faults_layers.py" in message
        assert len(message) <= 2000
        for t in (hang, nan, raised):  # not retried
            assert t.user_attrs["attempt"] == 0
        assert [t.state for t in by_mode["ok"]] == [S.COMPLETE]
        oom = by_mode["oom"][0]
        assert oom.state is S.FAIL and oom.user_attrs["fail_reason"] == "oom"
        assert oom.user_attrs["attempt"] == 1  # retried once (sweep.retries), same seed
        assert summary["retried"] == 1
        assert summary["failures"] == {"timeout": 1, "nan_loss": 1, "user_error": 1, "oom": 1}
    finally:
        drivers.close()


REPEATING = """
name: repeats
model:
  factory: faults_layers:build
  imports: [faults_layers]
data:
  loader: clonesweep.datasets:digits
  kwargs: {limit: 200}
training:
  epochs: 1
  batch_size: 64
  optimizer: {name: adam, learning_rate: 0.003}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
objective: {metric: val_accuracy, direction: maximize}
parameters:
  layers.trap.mode: {values: [ok, raise]}
  layers.hidden.units: {values: [8, 16, 32]}
enqueue:  # distinct points: Optuna skips an enqueued point that is already queued
  - {layers.trap.mode: ok, layers.hidden.units: 8}
  - {layers.trap.mode: raise, layers.hidden.units: 8}
  - {layers.trap.mode: raise, layers.hidden.units: 16}
  - {layers.trap.mode: raise, layers.hidden.units: 32}
sweep:
  trials: 12
  parallel: 1
  sampler: {name: random, seed: 0}
  run_dir: runs
"""


def test_a_failure_that_repeats_stops_the_sweep_with_its_message(tmp_path: Path) -> None:
    """A custom layer that raises on every trial after one completed: the sweep stops after
    three alike (their tracebacks differ in nothing but numbers), exit 1 with the message
    and a hint, nothing more asked, the completed trial's model kept."""
    path = tmp_path / "repeats.yaml"
    path.write_text(REPEATING)
    drivers = Drivers(tmp_path)
    drivers.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).parent), drivers.env.get("PYTHONPATH", "")) if p)
    try:
        done = drivers.run("run", str(path), timeout=500)
        assert done.returncode == 1, done.stderr[-3000:]
        assert ("stopped after 3 trials failed in a row with the same error (user_error; "
                "trials 1, 2, 3): ValueError: Exception encountered when calling Trap.call(). "
                "trap: user code failed on purpose" in done.stderr), done.stderr[-3000:]
        assert "hint: fix the code the message names" in done.stderr
        got = trials(tmp_path / "runs" / "repeats", "repeats")
        assert [t.state for t in got] == [S.COMPLETE, S.FAIL, S.FAIL, S.FAIL]
        assert (tmp_path / "runs" / "repeats" / "best.keras").is_file()
    finally:
        drivers.close()
