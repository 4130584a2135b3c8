"""Trials of one layer structure share one traced graph (clonesweep.workers.engines.graphfit)
and end bitwise as Keras's own ``fit`` ends them: the same history, weights, optimizer state and
Dropout generator states, on real Keras and real (small) digits data."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import keras
import numpy as np
import pytest

from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import EngineFallback, FallbackReason, TrialSpec, TrialState
from clonesweep.workers.engines.graphfit import reuse_blocker
from clonesweep.workers.rebuild import rebuild
from clonesweep.workers.runner import TrialRunner, WorkerJob
from tests_support import CONFIGS


class Quiet:
    def report(self, step: int, value: float) -> bool:
        return False


class StateRunner(TrialRunner):
    """Keeps each completed trial's final model and optimizer variables (``on_trained``)."""

    def __init__(self, job: WorkerJob) -> None:
        self.state: dict[int, list[np.ndarray]] = {}
        super().__init__(job, on_trained=self._keep)

    def _keep(self, number: int, value: float, model: Any) -> None:
        self.state[number] = [np.array(v.numpy()) for v in
                              [*model.variables, *model.optimizer.variables]]


def job(reuse: bool, config: str | None = None, **training: Any) -> WorkerJob:
    tr = TrainingSpec(**{"epochs": 3, "batch_size": 32, "validation_batch_size": 50,
                         "optimizer_config": {"learning_rate": 0.01}, **training})
    loader = "clonesweep.datasets:digits_images" if config else "clonesweep.datasets:digits"
    return WorkerJob(
        base_config_json=config or (CONFIGS / "digits_mlp.json").read_text(), imports=(),
        data=DataSpec(loader, {"limit": 300}),
        training=dataclasses.replace(tr, reuse_graphs=reuse),
        objective=ObjectiveSpec(), keep_best=True)


def flatten_config() -> str:
    """Flatten -> Dense(tanh) -> Activation -> Dropout -> Dense(softmax) on 8x8x1 images."""
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(name="flat"),
        keras.layers.Dense(12, activation="tanh", name="hidden"),
        keras.layers.Activation("relu", name="act"),
        keras.layers.Dropout(0.25, name="drop"),
        keras.layers.Dense(10, activation="softmax", use_bias=False, name="out"),
    ], name="flat_mlp")
    return json.dumps(keras.saving.serialize_keras_object(model))


def run_both(specs: list[TrialSpec], config: str | None = None,
             **training: Any) -> tuple[StateRunner, StateRunner, list[Any], list[Any]]:
    graph, plain = StateRunner(job(True, config, **training)), StateRunner(job(False, config,
                                                                               **training))
    return (graph, plain, [graph.run(s, Quiet()) for s in specs],
            [plain.run(s, Quiet()) for s in specs])


def assert_same(graph: StateRunner, plain: StateRunner, ours: list[Any],
                theirs: list[Any]) -> None:
    for a, b in zip(ours, theirs, strict=True):
        assert a.state is b.state is TrialState.COMPLETE, (a.message, b.message)
        assert (a.engine, b.engine) == ("graph", "keras")
        assert a.engine_fallback is None and b.engine_fallback is None
        assert a.history == b.history  # bitwise: floats compared with ==
        assert a.value == b.value
        mine, keras_own = graph.state[a.number], plain.state[b.number]
        assert len(mine) == len(keras_own)
        for x, y in zip(mine, keras_own, strict=True):
            assert x.shape == y.shape and x.dtype == y.dtype
            assert np.array_equal(x, y)


def test_adam_trials_of_other_unit_counts_share_one_trace_and_match_keras_bitwise() -> None:
    specs = [TrialSpec(0, {"layers.hidden.units": 20, "layers.drop.rate": 0.2}, seed=4),
             TrialSpec(1, {"layers.hidden.units": 33, "layers.drop.rate": 0.45,
                           "optimizer.learning_rate": 0.05}, seed=5),
             TrialSpec(2, {"layers.hidden.units": 7, "layers.drop.rate": 0.1,
                           "train.batch_size": 17}, seed=6)]
    graph, plain, ours, theirs = run_both(specs)
    assert_same(graph, plain, ours, theirs)
    engines = graph.feeds.graph_engines
    assert len(engines) == 1  # one structure ...
    assert engines[0]._epoch.experimental_get_tracing_count() == 1  # ... traced once
    assert engines[0]._validate.experimental_get_tracing_count() == 1


def test_no_dropout_and_sgd_with_nesterov_momentum_match_keras_bitwise() -> None:
    specs = [TrialSpec(0, {"layers.hidden.units": 16, "layers.drop.rate": 0.0}, seed=2),
             TrialSpec(1, {"layers.hidden.units": 24, "layers.drop.rate": 0.3}, seed=3)]
    assert_same(*run_both(specs))
    sgd = {"optimizer": "SGD",
           "optimizer_config": {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}}
    assert_same(*run_both(specs, **sgd))
    assert_same(*run_both(specs[:1], optimizer="SGD",
                          optimizer_config={"learning_rate": 0.1}))


def test_flatten_activation_and_a_biasless_output_match_keras_bitwise() -> None:
    specs = [TrialSpec(0, {"layers.hidden.units": 9}, seed=11),
             TrialSpec(1, {"layers.hidden.units": 14, "layers.drop.rate": 0.4}, seed=12)]
    assert_same(*run_both(specs, config=flatten_config()))


def test_what_the_graph_does_not_cover_trains_through_keras_and_says_why() -> None:
    functional = TrialRunner(job(True, (CONFIGS / "digits_cnn.json").read_text()))
    result = functional.run(TrialSpec(0, {}, seed=1), Quiet())
    assert result.state is TrialState.COMPLETE
    assert result.engine == "keras"
    assert result.engine_fallback == EngineFallback(
        "graph", FallbackReason.NOT_COVERED, "the model is a Functional, not a Sequential")
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="conv"),
                             keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    runner = TrialRunner(job(True, json.dumps(keras.saving.serialize_keras_object(conv))))
    result = runner.run(TrialSpec(0, {}, seed=1), Quiet())
    assert result.state is TrialState.COMPLETE
    assert (result.engine, str(result.engine_fallback)) == (
        "keras", "graph: not_covered: layer 'conv' is a Conv2D")
    rms = TrialRunner(job(True, optimizer="RMSprop"))
    assert str(rms.run(TrialSpec(0, {}, seed=1), Quiet()).engine_fallback) == (
        "graph: not_covered: the optimizer is RMSprop (covered: Adam, SGD)")


@pytest.mark.parametrize(("change", "why"), [
    ({"jit_compile": True}, "jit_compile is on"),
    ({"optimizer_config": {"learning_rate": 0.01, "clipnorm": 1.0}}, "sets clipnorm"),
    ({"optimizer_config": {"learning_rate": 0.01, "amsgrad": True}}, "amsgrad"),
])
def test_blockers_name_the_setting(change: dict[str, Any], why: str) -> None:
    runner = TrialRunner(job(True, **change))
    data = runner._load_data()
    variant = rebuild(runner._base_config, {}, seed=1)
    runner._compile(variant)
    tr = runner.job.training
    reason = reuse_blocker(variant.model, data, tr.loss, tr.metrics, tr.jit_compile)
    assert reason is not None and why in reason
