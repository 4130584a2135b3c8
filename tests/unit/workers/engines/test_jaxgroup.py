"""What the fused JAX group engine declines, read from the worker's state alone (no Keras,
no JAX): each refusal is a typed EngineFallback naming the setting; the group then trains
one member at a time on Keras's fit (tests/scenarios/ensemble/test_fused_jax.py runs both ways)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clonesweep.spec.model import CallbackSpec, DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import FallbackReason
from clonesweep.workers.engines.base import TrainData
from clonesweep.workers.engines.feeds import FeedCache
from clonesweep.workers.engines.jaxgroup import ENGINE, group_declines
from clonesweep.workers.job import WorkerJob, WorkerState

X, Y = np.zeros((8, 4), "float32"), np.zeros(8, "int32")


def _state(training: TrainingSpec | None = None, data: TrainData | None = None) -> WorkerState:
    job = WorkerJob("{}", (), DataSpec("m:f"), training or TrainingSpec(), ObjectiveSpec())
    return WorkerState(job, {}, data or TrainData(X, Y, X, Y), FeedCache(), "node", "w")


def test_a_plain_group_on_jax_is_taken() -> None:
    assert group_declines(_state(), "jax") is None


def test_a_worker_on_another_backend_declines_saying_how_to_fuse() -> None:
    why = group_declines(_state(), "tensorflow")
    assert why is not None and why.engine == ENGINE and why.reason is FallbackReason.BACKEND
    assert "KERAS_BACKEND=jax" in why.detail and "tensorflow" in why.detail


@pytest.mark.parametrize(("change", "named"), [
    ({"callbacks": (CallbackSpec("EarlyStopping"),)}, "callbacks"),
    ({"class_weight": {0: 1.0, 1: 2.0}}, "class_weight"),
    ({"steps_per_execution": 4}, "steps_per_execution"),
])
def test_settings_each_member_needs_its_own_fit_for_are_declined(change: dict[str, object],
                                                                  named: str) -> None:
    training = dataclasses.replace(TrainingSpec(), **change)  # type: ignore[arg-type]
    why = group_declines(_state(training), "jax")
    assert why is not None and why.reason is FallbackReason.NOT_COVERED and named in why.detail


def test_weighted_data_is_declined_and_dict_or_list_inputs_are_taken() -> None:
    weighted = TrainData(X, Y, X, Y, sample_weight=np.ones(8, "float32"))
    why = group_declines(_state(data=weighted), "jax")
    assert why is not None and "sample weights" in why.detail
    # Several inputs (keras-hub's token_ids / padding_mask...): sliced and gathered per key.
    for inputs in ({"a": X}, [X, X]):
        assert group_declines(_state(data=TrainData(inputs, Y, inputs, Y)), "jax") is None
