"""Training as general as Keras's fit, on real tiny models: frozen layers, 1-D binary labels,
multi-output models, class and sample weights, learning-rate schedules and the sweep file's
callbacks. Each trial is asked of the traced-graph engine (``reuse_graphs`` on, the default):
it trains there or on Keras's fit, and its result names the engine and, for a fallback, why.
An engine's own error never fails a trial."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import keras
import numpy as np
import pytest

from clonesweep.spec.model import CallbackSpec, DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import FailReason, FallbackReason, TrialResult, TrialSpec, TrialState
from clonesweep.workers import _keras
from clonesweep.workers.engines.graphfit import GraphEngine
from clonesweep.workers.runner import TrialRunner, WorkerJob

N, N_VAL = 96, 40


class Quiet:
    def report(self, step: int, value: float) -> bool:
        return False


class Recording:
    def __init__(self) -> None:
        self.steps: list[int] = []

    def report(self, step: int, value: float) -> bool:
        self.steps.append(step)
        return False


@keras.saving.register_keras_serializable(package="cstest")
class StopAfter(keras.callbacks.Callback):
    """A user's own callback: stops training after ``epochs`` epochs."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True

    def get_config(self) -> dict[str, Any]:  # registration asks for it
        return {"epochs": self.epochs}


def _arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N + N_VAL, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    return x[:N], y[:N], x[N:], y[N:]


def three_classes() -> tuple[np.ndarray, ...]:
    x, y, xv, yv = _arrays()
    return x, y + (x[:, 2] > 1), xv, yv + (xv[:, 2] > 1)


def binary_1d() -> tuple[np.ndarray, ...]:
    return _arrays()


def two_outputs() -> tuple[Any, ...]:
    x, y, xv, yv = _arrays()
    return x, (y, 1 - y), xv, (yv, 1 - yv)


def weighted(validation: bool = False) -> tuple[Any, ...]:
    x, y, xv, yv = three_classes()
    sw = np.where(y == 0, 3.0, 1.0)
    return (x, y, xv, yv, sw, np.where(yv == 0, 3.0, 1.0)) if validation else (x, y, xv, yv, sw)


def _config(model: keras.Model) -> str:
    return json.dumps(keras.saving.serialize_keras_object(model))


def mlp(outputs: int = 3, activation: str = "softmax", frozen: bool = False) -> str:
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")
    hidden.trainable = not frozen
    return _config(keras.Sequential([
        keras.Input((6,)), hidden, keras.layers.Dropout(0.2, name="drop"),
        keras.layers.Dense(outputs, activation=activation, name="out")], name="tiny"))


def two_headed() -> str:
    inp = keras.Input((6,), name="x")
    h = keras.layers.Dense(8, activation="relu", name="hidden")(inp)
    a = keras.layers.Dense(2, activation="softmax", name="a")(h)
    b = keras.layers.Dense(2, activation="softmax", name="b")(h)
    return _config(keras.Model(inp, [a, b], name="two_heads"))


def runner(config: str, loader: str = "three_classes", metric: str = "val_accuracy",
           kwargs: dict[str, Any] | None = None, **training: Any) -> TrialRunner:
    settings = {"epochs": 3, "batch_size": 16, "validation_batch_size": 20,
                "optimizer_config": {"learning_rate": 0.01}, **training}
    return TrialRunner(WorkerJob(
        base_config_json=config, imports=(), data=DataSpec(f"{__name__}:{loader}", kwargs or {}),
        training=TrainingSpec(**settings), objective=ObjectiveSpec(metric=metric),
        keep_best=False))


def run(r: TrialRunner, seed: int = 1, reporter: Any = None) -> TrialResult:
    result = r.run(TrialSpec(0, {}, seed=seed), reporter or Quiet())
    assert result.state is TrialState.COMPLETE, result.message
    return result


def assert_fallback(result: TrialResult, reason: FallbackReason, words: str) -> None:
    assert result.engine == "keras"
    assert result.engine_fallback is not None, result
    assert result.engine_fallback.engine == "graph"
    assert result.engine_fallback.reason is reason
    assert words in result.engine_fallback.detail, result.engine_fallback


def test_a_frozen_layer_trains_on_keras_fit_and_stays_frozen() -> None:
    r = runner(mlp(frozen=True))
    result = run(r)
    assert_fallback(result, FallbackReason.NOT_COVERED, "layer 'hidden' is frozen")
    plain = run(runner(mlp(frozen=True), reuse_graphs=False))
    assert plain.engine == "keras" and plain.engine_fallback is None
    assert result.history == plain.history


def test_binary_crossentropy_with_1d_labels_trains_on_the_graph_bitwise() -> None:
    result = run(runner(mlp(1, "sigmoid"), "binary_1d", loss="binary_crossentropy"))
    assert (result.engine, result.engine_fallback) == ("graph", None)
    plain = run(runner(mlp(1, "sigmoid"), "binary_1d", loss="binary_crossentropy",
                       reuse_graphs=False))
    assert result.history == plain.history
    # Keras reshapes 1-D targets another way for mse (it squeezes the output): Keras's fit.
    mse = run(runner(mlp(1, "linear"), "binary_1d", loss="mse", metrics=("mae",),
                     metric="val_loss"))
    assert_fallback(mse, FallbackReason.NOT_COVERED, "the targets have rank 1")


def test_a_two_output_model_gets_its_metrics_per_output_by_default() -> None:
    result = run(runner(two_headed(), "two_outputs", metric="val_a_accuracy"))
    assert {"val_a_accuracy", "val_b_accuracy", "val_loss"} <= set(result.history)
    assert result.engine_fallback is not None  # a Functional: Keras's fit
    assert result.value == result.history["val_a_accuracy"][-1]


def test_class_weight_and_sample_weights_reach_keras_fit() -> None:
    base = run(runner(mlp()))
    assert base.engine == "graph" and base.engine_fallback is None
    by_class = run(runner(mlp(), class_weight={0: 3.0, 1: 1.0, 2: 1.0}))
    assert_fallback(by_class, FallbackReason.NOT_COVERED, "class_weight")
    by_sample = run(runner(mlp(), "weighted"))
    assert_fallback(by_sample, FallbackReason.NOT_COVERED, "sample weights")
    # Weighting class 0 by 3 through class_weight or through sample weights is one thing.
    assert by_class.history["loss"] == by_sample.history["loss"]
    assert by_class.history["loss"] != base.history["loss"]
    assert by_sample.history["val_loss"] == by_class.history["val_loss"]  # unweighted
    with_val = run(runner(mlp(), "weighted", kwargs={"validation": True}))
    assert with_val.history["loss"] == by_sample.history["loss"]
    assert with_val.history["val_loss"] != by_sample.history["val_loss"]


def test_a_learning_rate_schedule_trains_on_keras_fit() -> None:
    schedule = keras.saving.serialize_keras_object(
        keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.5))
    result = run(runner(mlp(), optimizer_config={"learning_rate": schedule}))
    assert_fallback(result, FallbackReason.NOT_COVERED, "schedule")
    constant = run(runner(mlp(), optimizer_config={"learning_rate": 0.05}))
    assert result.history["loss"] != constant.history["loss"]


def test_callbacks_named_in_the_sweep_file_run_in_keras_fit() -> None:
    stop = CallbackSpec("EarlyStopping", {"monitor": "loss", "min_delta": 10.0,
                                          "patience": 0})
    reduce = CallbackSpec("ReduceLROnPlateau", {"monitor": "loss", "min_delta": 10.0,
                                                "patience": 0, "factor": 0.5})
    result = run(runner(mlp(), epochs=5, callbacks=(stop,)))
    assert_fallback(result, FallbackReason.NOT_COVERED, "callbacks")
    assert len(result.history["loss"]) == 2  # stopped: no epoch gained 10
    lowered = run(runner(mlp(), epochs=3, callbacks=(reduce,)))
    rates = lowered.history["learning_rate"]
    assert rates[0] == rates[1] > rates[2]  # logged before each end-of-epoch cut
    own = run(runner(mlp(), epochs=5, callbacks=(CallbackSpec("cstest>StopAfter",
                                                                {"epochs": 3}),)))
    assert len(own.history["loss"]) == 3


def test_a_callback_keras_cannot_build_fails_the_trial_as_invalid_config() -> None:
    bad = runner(mlp(), callbacks=(CallbackSpec("cstest>StopAfter", {"epoch": 3}),))
    result = bad.run(TrialSpec(0, {}, seed=1), Quiet())
    assert result.state is TrialState.FAIL and result.reason is FailReason.INVALID_CONFIG
    assert "training.callbacks" in result.message and "epoch" in result.message
    unknown = runner(mlp(), callbacks=(CallbackSpec("cstest>Nothing", {}),))
    result = unknown.run(TrialSpec(0, {}, seed=1), Quiet())
    assert result.reason is FailReason.INVALID_CONFIG and "model.imports" in result.message


def test_an_engine_error_reruns_the_trial_on_keras_fit_and_never_fails_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph engine breaks inside its second epoch (a stand-in for any bug of ours):
    the trial reruns from a fresh rebuild on Keras's fit, ends as a plain Keras trial ends,
    and the driver hears of each epoch once."""
    train_epoch = GraphEngine.train_epoch
    calls = []

    def broken(self: GraphEngine, *args: Any, **kwargs: Any) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("an engine bug")
        return train_epoch(self, *args, **kwargs)

    monkeypatch.setattr(GraphEngine, "train_epoch", broken)
    reporter = Recording()
    result = run(runner(mlp()), reporter=reporter)
    assert_fallback(result, FallbackReason.ENGINE_ERROR, "RuntimeError: an engine bug")
    assert reporter.steps == [0, 1, 2]
    monkeypatch.undo()
    assert result.history == run(runner(mlp(), reuse_graphs=False)).history


def test_an_unverified_keras_release_says_so_on_the_trial(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_keras, "VERIFIED_KERAS", ("3.0",))
    result = run(runner(mlp()))
    assert_fallback(result, FallbackReason.UNVERIFIED_VERSION, keras.__version__)
    assert str(result.engine_fallback).startswith("graph: unverified_version: Keras ")


def test_fused_members_with_class_weight_train_separately_and_say_why() -> None:
    from clonesweep.workers.member import FusedGroup

    job = runner(mlp(), class_weight={0: 2.0, 1: 1.0, 2: 1.0}).job
    r = TrialRunner(dataclasses.replace(job, keep_members=True))
    group = FusedGroup(0, (TrialSpec(0, {}, seed=1), TrialSpec(1, {}, seed=2)))
    done = r.run_fused(group)
    assert done.state is TrialState.COMPLETE and done.engine_fallback is not None
    assert done.engine_fallback.reason is FallbackReason.NOT_COVERED
    for member in group.members:
        out = r.member_output(member.number)
        assert out is not None and out.result is not None and not out.fused
        assert out.result.engine == "keras"
        assert str(out.result.engine_fallback) == \
            "fused: not_covered: training.class_weight is set"


def test_a_fused_engine_error_trains_the_members_one_by_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from clonesweep.workers.engines.fusedgraph import StackedEngine
    from clonesweep.workers.member import FusedGroup

    def broken(self: StackedEngine, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a stacked-engine bug")

    monkeypatch.setattr(StackedEngine, "train_epoch", broken)
    r = TrialRunner(dataclasses.replace(runner(mlp()).job, keep_members=True))
    group = FusedGroup(0, (TrialSpec(0, {}, seed=1), TrialSpec(1, {}, seed=2)))
    done = r.run_fused(group)
    assert done.state is TrialState.COMPLETE
    assert done.engine_fallback is not None
    assert done.engine_fallback.reason is FallbackReason.ENGINE_ERROR
    for member in group.members:
        out = r.member_output(member.number)
        assert out is not None and out.result is not None
        assert out.result.state is TrialState.COMPLETE, out.result.message
        assert out.result.engine == "graph"
        assert str(out.result.engine_fallback) == \
            "fused: engine_error: RuntimeError: a stacked-engine bug"


def test_a_two_output_model_with_the_default_objective_takes_the_outputs_mean() -> None:
    result = run(runner(two_headed(), "two_outputs"))  # objective: val_accuracy (default)
    a, b = result.history["val_a_accuracy"], result.history["val_b_accuracy"]
    assert result.history["val_accuracy"] == [(x + y) / 2 for x, y in zip(a, b, strict=True)]
    assert result.value == result.history["val_accuracy"][-1]
    assert "accuracy" not in result.history  # only the metrics the trial is judged by


# compile_trial on a worker whose Keras runs on JAX (a fresh process: Keras fixes its backend
# per process), with jit_compile unset, false and true in the sweep file.
_JIT_ON_JAX = """
import json, keras
from clonesweep.spec.model import TrainingSpec
from clonesweep.workers.rebuild import rebuild
from clonesweep.workers.training import compile_trial
config = keras.saving.serialize_keras_object(keras.Sequential(
    [keras.Input((4,)), keras.layers.Dense(3, name="out")]))
got = []
for jit in (None, False, True):
    variant = rebuild(config, {}, seed=0)
    compile_trial(variant, TrainingSpec(jit_compile=jit))
    got.append(variant.model.jit_compile)
print(json.dumps([keras.backend.backend(), got]))
"""


def test_jit_compile_unset_is_on_for_jax_workers_and_off_for_tensorflow() -> None:
    import os
    import subprocess
    import sys

    from clonesweep.workers.rebuild import rebuild
    from clonesweep.workers.training import compile_trial

    done = subprocess.run([sys.executable, "-c", _JIT_ON_JAX], capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                               "CLONESWEEP_JAX_CACHE": "off"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["jax", [True, False, True]]
    # This process runs TensorFlow: unset means a graph without XLA.
    config = keras.saving.serialize_keras_object(keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="out")]))
    variant = rebuild(config, {}, seed=0)
    compile_trial(variant, TrainingSpec())
    assert variant.model.jit_compile is False
