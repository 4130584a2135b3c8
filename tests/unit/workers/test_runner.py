"""TrialRunner on real Keras: reproducible trials, pruning, and each failure reason."""

from __future__ import annotations

import dataclasses
import json

import pytest

from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import FailReason, TrialSpec, TrialState
from clonesweep.workers.runner import TrialRunner, WorkerJob
from tests_support import CONFIGS


class Recorder:
    """A Reporter that records every value and prunes from a given step on."""

    def __init__(self, prune_from: int | None = None) -> None:
        self.values: list[tuple[int, float]] = []
        self.prune_from = prune_from

    def report(self, step: int, value: float) -> bool:
        self.values.append((step, value))
        return self.prune_from is not None and step >= self.prune_from


def job(**changes: object) -> WorkerJob:
    base = WorkerJob(
        base_config_json=(CONFIGS / "digits_mlp.json").read_text(),
        imports=(),
        data=DataSpec("clonesweep.datasets:digits", {"limit": 300}),
        training=TrainingSpec(epochs=2, batch_size=32, optimizer_config={"learning_rate": 0.01}),
        objective=ObjectiveSpec(),
        keep_best=False,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def runner() -> TrialRunner:
    return TrialRunner(job())


def test_same_spec_twice_gives_bitwise_identical_trials(runner: TrialRunner) -> None:
    spec = TrialSpec(0, {"layers.hidden.units": 16}, seed=11)
    first, second = runner.run(spec, Recorder()), runner.run(spec, Recorder())
    assert first.state is TrialState.COMPLETE and first.value is not None
    assert first.history == second.history and first.value == second.value
    assert first.config_hash == second.config_hash and first.seeds == second.seeds
    other = runner.run(TrialSpec(1, {"layers.hidden.units": 16}, seed=12), Recorder())
    assert other.history != first.history and other.seeds != first.seeds
    assert other.config_hash != first.config_hash  # the seeds are part of the config


def test_reports_every_epoch_and_applies_params(runner: TrialRunner) -> None:
    rec = Recorder()
    result = runner.run(TrialSpec(2, {"layers.hidden.units": 24, "train.epochs": 3}, seed=1),
                        rec)
    assert [step for step, _ in rec.values] == [0, 1, 2]
    assert rec.values[-1][1] == result.value
    config = json.loads(result.config_json)
    assert config["config"]["layers"][1]["config"]["units"] == 24
    assert result.param_count == 64 * 24 + 24 + 24 * 10 + 10
    assert result.timings.build_s > 0 and result.timings.train_s > 0


def test_pruned_trial_stops_at_the_decision(runner: TrialRunner) -> None:
    rec = Recorder(prune_from=0)
    result = runner.run(TrialSpec(3, {"train.epochs": 3}, seed=1), rec)
    assert result.state is TrialState.PRUNED and result.value is None
    assert len(rec.values) == 1 and len(result.history["loss"]) == 1


def test_invalid_value_fails_with_invalid_config(runner: TrialRunner) -> None:
    result = runner.run(TrialSpec(4, {"layers.hidden.activation": "no_such_fn"}, seed=1),
                        Recorder())
    assert result.state is TrialState.FAIL and result.reason is FailReason.INVALID_CONFIG
    assert "no_such_fn" in result.message


def test_exploding_loss_fails_with_nan_loss() -> None:
    runner = TrialRunner(job(training=TrainingSpec(epochs=2, batch_size=32, optimizer="sgd",
                                                   optimizer_config={"learning_rate": 1e12})))
    result = runner.run(TrialSpec(5, {}, seed=1), Recorder())
    assert result.state is TrialState.FAIL and result.reason is FailReason.NAN_LOSS
    assert not result.reason.retryable


def test_missing_objective_metric_is_a_user_error() -> None:
    runner = TrialRunner(job(objective=ObjectiveSpec(metric="val_auc")))
    result = runner.run(TrialSpec(6, {}, seed=1), Recorder())
    assert result.reason is FailReason.USER_ERROR
    assert "val_auc" in result.message and "val_accuracy" in result.message


def test_deadline_fails_with_timeout() -> None:
    runner = TrialRunner(job(trial_timeout=1e-6, training=TrainingSpec(epochs=3)))
    result = runner.run(TrialSpec(7, {}, seed=1), Recorder())
    assert result.reason is FailReason.TIMEOUT and len(result.history["loss"]) == 1


def test_broken_data_loader_is_a_user_error_for_every_trial() -> None:
    runner = TrialRunner(job(data=DataSpec("clonesweep.datasets:digits", {"limit": "x"})))
    for number in (8, 9):
        result = runner.run(TrialSpec(number, {}, seed=1), Recorder())
        assert result.reason is FailReason.USER_ERROR
        assert "clonesweep.datasets:digits" in result.message
