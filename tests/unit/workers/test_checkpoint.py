"""Per-epoch checkpoints on real Keras, without Ray: a trial cut short after some epochs and
retried resumes after its last checkpoint and ends exactly as if it had never stopped."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import FailReason, TrialSpec, TrialState
from clonesweep.workers.checkpoint import Checkpoints
from clonesweep.workers.engines.kerasfit import epoch_orders
from clonesweep.workers.runner import TrialRunner, WorkerJob
from tests_support import CONFIGS

PARAMS = {"layers.hidden.units": 24, "layers.drop.rate": 0.3, "train.epochs": 6}


class Killed(BaseException):
    """Stands in for the worker's death: nothing in the runner catches it."""


class Reporter:
    """Records each reported step; "dies" after reporting ``kill_after`` (if given)."""

    def __init__(self, kill_after: int | None = None, prune_from: int | None = None) -> None:
        self.steps: list[int] = []
        self.kill_after, self.prune_from = kill_after, prune_from

    def report(self, step: int, value: float) -> bool:
        self.steps.append(step)
        if self.kill_after is not None and step >= self.kill_after:
            raise Killed(f"killed after epoch {step + 1}")
        return self.prune_from is not None and step >= self.prune_from


class WeightsRunner(TrialRunner):
    """Keeps each completed trial's final weights (through ``on_trained``)."""

    def __init__(self, job: WorkerJob) -> None:
        self.weights: dict[int, list[np.ndarray]] = {}
        super().__init__(job, on_trained=self._keep)

    def _keep(self, number: int, value: float, model: Any) -> None:
        self.weights[number] = [np.array(w) for w in model.get_weights()]


def job(folder: Path | None, **changes: Any) -> WorkerJob:
    base = WorkerJob(
        base_config_json=(CONFIGS / "digits_mlp.json").read_text(), imports=(),
        data=DataSpec("clonesweep.datasets:digits", {"limit": 300}),
        training=TrainingSpec(epochs=2, batch_size=32, optimizer_config={"learning_rate": 0.01}),
        objective=ObjectiveSpec(), keep_best=False,
        checkpoint_dir=None if folder is None else str(folder), checkpoint_every_s=0.0,
        retries=1)
    return dataclasses.replace(base, **changes)


def files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_resumed_trial_ends_bitwise_like_an_uninterrupted_one(tmp_path: Path) -> None:
    spec = TrialSpec(3, PARAMS, seed=21)
    whole = WeightsRunner(job(None))
    expected = whole.run(spec, Reporter())
    assert expected.state is TrialState.COMPLETE and expected.resumed_from_epoch is None

    cut = WeightsRunner(job(tmp_path))
    with pytest.raises(Killed):
        cut.run(spec, Reporter(kill_after=3))
    # Epochs 1-3 were checkpointed; the 4th ended before its checkpoint (the report "died").
    assert files(tmp_path) == ["trial-3.npz"]

    again = WeightsRunner(job(tmp_path))  # a fresh worker
    reporter = Reporter()
    result = again.run(spec.retry(), reporter)
    assert result.state is TrialState.COMPLETE and result.attempt == 1
    assert result.resumed_from_epoch == 3
    assert reporter.steps == [3, 4, 5]  # epochs 0-2 were not trained again
    assert result.history == expected.history  # all six epochs, bitwise
    assert len(result.history["val_accuracy"]) == 6
    assert result.value == expected.value
    for mine, theirs in zip(again.weights[3], whole.weights[3], strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert files(tmp_path) == []  # deleted once the trial ended


def test_first_attempt_never_resumes_and_every_end_deletes(tmp_path: Path) -> None:
    spec = TrialSpec(4, PARAMS, seed=2)
    runner = TrialRunner(job(tmp_path))
    with pytest.raises(Killed):
        runner.run(spec, Reporter(kill_after=2))
    assert files(tmp_path) == ["trial-4.npz"]
    first = runner.run(spec, Reporter())  # attempt 0 again: starts over
    assert first.resumed_from_epoch is None and len(first.history["loss"]) == 6
    assert files(tmp_path) == []
    with pytest.raises(Killed):
        runner.run(spec, Reporter(kill_after=2))
    pruned = runner.run(spec.retry(), Reporter(prune_from=4))
    assert pruned.state is TrialState.PRUNED and pruned.resumed_from_epoch == 2
    assert len(pruned.history["loss"]) == 5 and files(tmp_path) == []


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path: Path) -> None:
    runner = TrialRunner(job(tmp_path))
    with pytest.raises(Killed):
        runner.run(TrialSpec(5, PARAMS, seed=2), Reporter(kill_after=2))
    other = runner.run(TrialSpec(5, {**PARAMS, "layers.hidden.units": 16}, seed=2, attempt=1),
                       Reporter())
    assert other.state is TrialState.COMPLETE and other.resumed_from_epoch is None
    assert len(other.history["loss"]) == 6


def test_checkpoints_wait_for_checkpoint_every_s(tmp_path: Path) -> None:
    runner = TrialRunner(job(tmp_path, checkpoint_every_s=3600.0))
    with pytest.raises(Killed):
        runner.run(TrialSpec(6, PARAMS, seed=2), Reporter(kill_after=3))
    assert files(tmp_path) == []  # a short trial writes none


def test_retryable_failure_keeps_the_checkpoint_for_the_retry(tmp_path: Path) -> None:
    from clonesweep.trials import TrialResult

    runner = TrialRunner(job(tmp_path))
    with pytest.raises(Killed):
        runner.run(TrialSpec(7, PARAMS, seed=2), Reporter(kill_after=1))
    oom = TrialResult(7, TrialState.FAIL, reason=FailReason.OOM)
    runner._ended(TrialSpec(7, PARAMS, seed=2), oom)  # attempt 0 < retries: a retry comes
    assert files(tmp_path) == ["trial-7.npz"]
    runner._ended(TrialSpec(7, PARAMS, seed=2, attempt=1), oom)  # the last attempt
    assert files(tmp_path) == []


def test_checkpoint_files_round_trip_and_bad_ones_are_ignored(tmp_path: Path) -> None:
    store = Checkpoints(tmp_path / "sub")
    model = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7, 9], dtype=np.uint32)]
    assert store.save(1, "key", 2, {"loss": [0.5, 0.25]}, model, [np.int64(4)])
    saved = store.load(1, "key")
    assert saved is not None and saved.epochs_done == 2 and saved.history == {
        "loss": [0.5, 0.25]}
    for a, b in zip(saved.model, model, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert store.load(1, "other key") is None and store.load(2, "key") is None
    assert not [p for p in os.listdir(tmp_path / "sub") if p.endswith(".tmp")]
    store.path(1).write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        assert store.load(1, "key") is None
    store.delete(1)
    store.delete(1)  # twice: no error
    assert not store.path(1).exists()


def test_unwritable_checkpoint_folder_warns_and_the_trial_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    runner = TrialRunner(job(blocker / "checkpoints"))
    with pytest.warns(UserWarning, match="cannot (write|delete) its checkpoint"):
        result = runner.run(TrialSpec(8, PARAMS, seed=2), Reporter())
    assert result.state is TrialState.COMPLETE


def test_epoch_orders_of_a_resumed_trial_are_the_tail_of_the_full_ones() -> None:
    full = list(epoch_orders(9, 50, 0, 5))
    tail = list(epoch_orders(9, 50, 3, 5))
    assert len(tail) == 2
    for a, b in zip(full[3:], tail, strict=True):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(9)  # the order the per-epoch loop used to draw
    for order in full:
        np.testing.assert_array_equal(order, rng.permutation(50))


def test_sweep_keys_set_the_workers_checkpoint_folder(tmp_path: Path, sweep_file: Any) -> None:
    from clonesweep.errors import SpecError
    from clonesweep.orchestrator.sweep import worker_job
    from clonesweep.spec import load_sweep

    default = load_sweep(sweep_file(name="a"))
    assert default.sweep.checkpoint_every_s == 30.0 and default.sweep.checkpoint_dir is None
    made = worker_job(default, {"class_name": "Sequential"})
    assert made.checkpoint_dir == str(default.run_folder / "checkpoints")
    assert Path(made.checkpoint_dir).is_absolute() and made.retries == default.sweep.retries

    shared = load_sweep(sweep_file(name="b", sweep_extra="\n  checkpoint_dir: shared/ckpt"
                                                         "\n  checkpoint_every_s: 0"))
    assert shared.sweep.checkpoint_dir == (tmp_path / "shared" / "ckpt").resolve()
    made = worker_job(shared, {"class_name": "Sequential"})
    assert made.checkpoint_dir == str(tmp_path / "shared" / "ckpt" / "b")
    assert made.checkpoint_every_s == 0.0

    with pytest.raises(SpecError, match="checkpoint_every_s"):
        load_sweep(sweep_file(name="c", sweep_extra="\n  checkpoint_every_s: -1"))
    with pytest.raises(SpecError, match="checkpoint_dir"):
        load_sweep(sweep_file(name="d", sweep_extra="\n  checkpoint_dir: 3"))
