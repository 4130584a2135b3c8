"""Where the traced-graph engine is bitwise equal to Keras's fit: softmax, sigmoid and linear
outputs (one unit: Keras adds that bias with a plain add, not a bias_add), a one-unit hidden
layer, at learning rates 1e-3 and 0.06, with Adam and SGD. Histories, trained weights and
optimizer state are compared with ``==``; no tolerance."""

from __future__ import annotations

import json
from typing import Any

import keras
import numpy as np
import pytest

from clonesweep.spec.model import DataSpec, Direction, ObjectiveSpec, TrainingSpec
from clonesweep.trials import TrialSpec, TrialState
from clonesweep.workers.runner import TrialRunner, WorkerJob


class Quiet:
    def report(self, step: int, value: float) -> bool:
        return False


def _variables(model: Any) -> list[np.ndarray]:
    """A trained model's and its optimizer's variables, copied (``on_trained``)."""
    return [np.array(v.numpy()) for v in [*model.variables, *model.optimizer.variables]]


def _arrays(kind: str) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 6)).astype(np.float32)
    if kind == "softmax":
        y: np.ndarray = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1)
    elif kind == "sigmoid":
        y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)[:, None]
    else:
        y = (x[:, 0] * 0.7 - x[:, 2]).astype(np.float32)[:, None]
    return x[:110], y[:110], x[110:], y[110:]


def softmax() -> tuple[np.ndarray, ...]:
    return _arrays("softmax")


def sigmoid() -> tuple[np.ndarray, ...]:
    return _arrays("sigmoid")


def linear() -> tuple[np.ndarray, ...]:
    return _arrays("linear")


_SETTINGS = {"softmax": ("sparse_categorical_crossentropy", ("accuracy",), 3, "softmax"),
             "sigmoid": ("binary_crossentropy", ("accuracy",), 1, "sigmoid"),
             "linear": ("mse", ("mae",), 1, None)}


def _run(kind: str, reuse: bool, lr: float, optimizer: str,
         hidden: int) -> tuple[Any, list[np.ndarray]]:
    loss, metrics, units, activation = _SETTINGS[kind]
    model = keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(hidden, activation="relu", name="hidden"),
        keras.layers.Dropout(0.2, name="drop"),
        keras.layers.Dense(units, activation=activation, name="out")], name="probe")
    training = TrainingSpec(epochs=3, batch_size=16, validation_batch_size=20, loss=loss,
                            metrics=metrics, optimizer=optimizer,
                            optimizer_config={"learning_rate": lr}, reuse_graphs=reuse)
    kept: dict[int, list[np.ndarray]] = {}
    runner = TrialRunner(WorkerJob(json.dumps(keras.saving.serialize_keras_object(model)), (),
                                   DataSpec(f"{__name__}:{kind}", {}), training,
                                   ObjectiveSpec("val_loss", Direction.MINIMIZE), keep_best=True),
                         on_trained=lambda number, _, trained: kept.update(
                             {number: _variables(trained)}))
    result = runner.run(TrialSpec(0, {}, seed=3), Quiet())
    assert result.state is TrialState.COMPLETE, result.message
    return result, kept[0]


@pytest.mark.parametrize("lr", [1e-3, 0.06])
@pytest.mark.parametrize("kind", ["softmax", "sigmoid", "linear"])
def test_the_graph_engine_is_bitwise_keras_fit(kind: str, lr: float) -> None:
    ours, mine = _run(kind, True, lr, "adam", 12)
    theirs, keras_own = _run(kind, False, lr, "adam", 12)
    assert (ours.engine, ours.engine_fallback, theirs.engine) == ("graph", None, "keras")
    assert ours.history == theirs.history
    for a, b in zip(mine, keras_own, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["sigmoid", "linear"])
def test_a_one_unit_hidden_layer_and_sgd_are_bitwise_too(kind: str) -> None:
    ours, mine = _run(kind, True, 0.06, "sgd", 1)
    theirs, keras_own = _run(kind, False, 0.06, "sgd", 1)
    assert ours.engine == "graph" and ours.history == theirs.history
    assert all(np.array_equal(a, b) for a, b in zip(mine, keras_own, strict=True))
