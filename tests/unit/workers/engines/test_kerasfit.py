"""A trial trains in one ``model.fit`` call, on real Keras, with the results of the per-epoch
loop it replaced: same data order, same history, same errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
import pytest

from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import FailReason, TrialSpec, TrialState
from clonesweep.workers.arrays import take
from clonesweep.workers.engines.base import TrainData
from clonesweep.workers.rebuild import rebuild
from clonesweep.workers.runner import TrialRunner, WorkerJob
from clonesweep.workers.seeding import DATA_ORDER
from tests_support import CONFIGS


class Quiet:
    def report(self, step: int, value: float) -> bool:
        return False


def job(**changes: Any) -> WorkerJob:
    base = WorkerJob(
        base_config_json=(CONFIGS / "digits_mlp.json").read_text(), imports=(),
        data=DataSpec("clonesweep.datasets:digits", {"limit": 300}),
        training=TrainingSpec(epochs=3, batch_size=32, optimizer_config={"learning_rate": 0.01},
                              validation_batch_size=50),
        objective=ObjectiveSpec(), keep_best=False)
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def runner() -> TrialRunner:
    return TrialRunner(job())


def per_epoch_history(runner: TrialRunner, spec: TrialSpec) -> dict[str, list[float]]:
    """The loop a trial used to run: fit(initial_epoch=e) on the e-th permutation, then
    evaluate, once per epoch."""
    keras.utils.clear_session()
    data = runner._load_data()
    x, y, x_va, y_va = data.x, data.y, data.x_val, data.y_val
    variant = rebuild(runner._base_config, spec.params, seed=spec.seed)
    runner._compile(variant)
    rng = np.random.default_rng(variant.materialized.seeds[DATA_ORDER])
    history: dict[str, list[float]] = {}
    for epoch in range(runner.job.training.epochs):
        order = rng.permutation(len(x))
        fit = variant.model.fit(take(x, order), take(y, order), batch_size=32,
                                epochs=epoch + 1, initial_epoch=epoch, shuffle=False, verbose=0)
        logs = {k: float(v[-1]) for k, v in fit.history.items()}
        val = variant.model.evaluate(x_va, y_va, batch_size=50, verbose=0, return_dict=True)
        logs.update({f"val_{k}": float(v) for k, v in val.items()})
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
    return history


def test_one_fit_gives_the_per_epoch_loops_history_bitwise(runner: TrialRunner) -> None:
    spec = TrialSpec(0, {"layers.hidden.units": 20, "layers.drop.rate": 0.2}, seed=4)
    result = runner.run(spec, Quiet())
    assert result.state is TrialState.COMPLETE
    assert result.history == per_epoch_history(runner, spec)
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_a_trial_calls_fit_once_and_splits_train_from_eval_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Keras's own fit: the shared traced graph (tests/unit/workers/engines/test_graphfit.py) is off.
    tr = dataclasses.replace(job().training, reuse_graphs=False)
    runner = TrialRunner(job(training=tr))
    calls: list[dict[str, Any]] = []
    fit = keras.Model.fit

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", spy)
    result = runner.run(TrialSpec(1, {"train.epochs": 4}, seed=1), Quiet())
    assert len(calls) == 1 and calls[0]["epochs"] == 4
    assert calls[0]["validation_batch_size"] == 50
    assert len(result.history["val_loss"]) == 4
    assert result.timings.train_s > 0 and result.timings.eval_s > 0
    assert result.engine == "keras"


def test_an_error_inside_fit_is_a_user_error_with_a_short_traceback() -> None:
    runner = TrialRunner(job())
    data = runner._load_data()
    # One feature short of the model's 64.
    runner._data = TrainData(data.x[:, :63], data.y, data.x_val[:, :63], data.y_val)
    result = runner.run(TrialSpec(2, {}, seed=1), Quiet())
    assert result.state is TrialState.FAIL and result.reason is FailReason.USER_ERROR
    assert "Traceback" in result.message and len(result.message) < 3000


def test_a_failing_reporter_is_not_taken_for_a_trial_failure(runner: TrialRunner) -> None:
    class Broken:
        def report(self, step: int, value: float) -> bool:
            raise ConnectionError("the driver is gone")

    with pytest.raises(ConnectionError, match="the driver is gone"):
        runner.run(TrialSpec(3, {}, seed=1), Broken())
    after = runner.run(TrialSpec(4, {}, seed=1), Quiet())  # the worker goes on
    assert after.state is TrialState.COMPLETE


def test_steps_per_execution_never_runs_across_two_epochs() -> None:
    tr = TrainingSpec(epochs=3, batch_size=32, optimizer_config={"learning_rate": 0.01},
                      validation_batch_size=50, steps_per_execution=3)  # 8 steps per epoch
    runner = TrialRunner(job(training=dataclasses.replace(tr, reuse_graphs=False)))
    spec = TrialSpec(5, {"layers.hidden.units": 12}, seed=8)
    assert runner.run(spec, Quiet()).history == per_epoch_history(runner, spec)
