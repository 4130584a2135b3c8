"""Fused groups on one stacked traced graph per layer structure
(clonesweep.workers.engines.fusedgraph):
one trace serves every later group of the structure, whatever its member count, unit count,
dropout rate or learning rate, and the members end as the stacked Keras model trains them
(same tolerance as tests/unit/workers/engines/test_fused.py: the two differ only in the order
batched kernels add in)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from test_fused import load
from test_graphfit import flatten_config

from clonesweep.orchestrator.ensemble.run import member_seed
from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import TrialSpec, TrialState
from clonesweep.workers.member import FusedGroup, predict
from clonesweep.workers.runner import TrialRunner, WorkerJob
from tests_support import CONFIGS


def runner(reuse: bool, optimizer: str = "adam", **settings: float) -> TrialRunner:
    training = TrainingSpec(epochs=3, batch_size=32, optimizer=optimizer,
                            optimizer_config={"learning_rate": 0.01, **settings},
                            reuse_graphs=reuse)
    return TrialRunner(WorkerJob((CONFIGS / "digits_mlp.json").read_text(), (),
                                 DataSpec("clonesweep.datasets:digits", {"limit": 300}),
                                 training, ObjectiveSpec(), keep_best=False,
                                 keep_members=True))


def group(first: int, k: int, params: dict[str, Any]) -> FusedGroup:
    return FusedGroup(first, tuple(TrialSpec(first + i, params, member_seed(first, i))
                                   for i in range(k)))


def members(run: TrialRunner, g: FusedGroup) -> list[Any]:
    done = run.run_fused(g)
    assert done.state is TrialState.COMPLETE and "fused" in done.message, done.message
    outs = [run.member_output(m.number) for m in g.members]
    for out in outs:
        assert out is not None and out.fused and out.result is not None
        assert out.result.state is TrialState.COMPLETE, out.result.message
    return outs


def assert_close(a: list[Any], b: list[Any]) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.result.history["val_loss"], y.result.history["val_loss"],
                                   rtol=1e-5)
        acc_x, acc_y = x.result.history["val_accuracy"], y.result.history["val_accuracy"]
        assert np.max(np.abs(np.subtract(acc_x, acc_y))) <= 1.0 / len(x.y_val) + 1e-9
        np.testing.assert_allclose(x.val_pred, y.val_pred, atol=1e-5)


def test_groups_of_one_structure_share_one_trace_and_match_the_keras_stacked_model(
        tmp_path: Path) -> None:
    graph, keras_model = runner(True), runner(False)
    groups = [group(0, 3, {"layers.hidden.units": 16, "layers.drop.rate": 0.3}),
              group(10, 2, {"layers.hidden.units": 24, "layers.drop.rate": 0.1,
                            "optimizer.learning_rate": 0.003})]
    ours = []
    for g in groups:
        ours.append(members(graph, g))
        assert_close(ours[-1], members(keras_model, g))
    engines = graph.feeds.stacked_engines
    assert len(engines) == 1  # one structure, one engine
    # One function per structure: an epoch's training and the members' predictions.
    assert engines[0]._epoch.experimental_get_tracing_count() == 1
    assert not keras_model.feeds.stacked_engines
    # A group's members differ (their own seeds): the comparison is not of equal members.
    assert not np.allclose(ours[0][0].val_pred, ours[0][1].val_pred, atol=1e-3)
    # The predictions a member is scored on are those of its exported model.
    x_val = graph._load_data().x_val
    for i, out in enumerate(ours[1]):
        model = load(out.model_bytes, tmp_path, f"member{i}")
        np.testing.assert_allclose(predict(model, x_val, 256), out.val_pred, rtol=0, atol=1e-6)


def test_sgd_with_momentum_and_a_group_retried_start_from_the_members_own_state() -> None:
    """SGD's momentum slot is stacked too; running the same group twice on one worker gives
    the same members (the engine's variables are reloaded from each member, nothing carries
    over from the group before)."""
    graph = runner(True, "sgd", momentum=0.9)
    keras_model = runner(False, "sgd", momentum=0.9)
    params = {"layers.hidden.units": 12, "layers.drop.rate": 0.2}
    g = group(0, 2, params)
    ours = members(graph, g)
    again = members(graph, dataclasses.replace(g, attempt=1))
    for a, b in zip(ours, again, strict=True):
        assert a.result.history == b.result.history
    assert_close(ours, members(keras_model, g))


def test_all_members_metrics_at_once_equal_member_by_member() -> None:
    """stacked_metrics (one call for every member) returns exactly what member_metrics
    returns for each member: the loss and accuracies computed at once, another metric
    member by member."""
    from clonesweep.workers.engines.fused import member_metrics, stacked_metrics

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 37, 10)).astype(np.float32)
    preds = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    y = rng.integers(0, 10, 37)
    training = TrainingSpec(metrics=("accuracy", "sparse_top_k_categorical_accuracy"))
    together = stacked_metrics(training, y, preds)
    assert together == [member_metrics(training, y, p) for p in preds]
    assert len({m["val_accuracy"] for m in together}) > 1  # members differ


def test_image_inputs_through_flatten_and_a_biasless_output() -> None:
    """8x8x1 digits images: Flatten -> Dense(tanh) -> Activation -> Dropout -> Dense without
    bias; the stacked engine agrees with the stacked Keras model."""
    config = flatten_config()

    def image_runner(reuse: bool) -> TrialRunner:
        training = TrainingSpec(epochs=2, batch_size=32, reuse_graphs=reuse,
                                optimizer_config={"learning_rate": 0.01})
        return TrialRunner(WorkerJob(config, (), DataSpec("clonesweep.datasets:digits_images",
                                                          {"limit": 300}),
                                     training, ObjectiveSpec(), keep_best=False,
                                     keep_members=True))

    graph, keras_model = image_runner(True), image_runner(False)
    g = group(0, 3, {"layers.hidden.units": 9})
    ours = members(graph, g)
    assert graph.feeds.stacked_engines
    assert_close(ours, members(keras_model, g))
