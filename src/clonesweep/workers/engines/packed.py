"""Packed trials: a sweep's trials of one structure trained as one vmapped program on JAX.

The driver (:mod:`clonesweep.orchestrator.packing`) groups trials whose params differ only
in keys it found packable (learning rate, weight decay, rates of plain ``Dropout`` layers;
the seed always differs) into a :class:`~clonesweep.trials.PackedGroup`. Here each trial
becomes a :class:`~clonesweep.workers.engines.jaxfused.FusedMember` (its seed, learning
rate, weight decay and Dropout rates) and :func:`~clonesweep.workers.engines.jaxfused.
train_fused_jax` trains them all at once. After each epoch every trial still counting
reports its objective under its own number; a pruned (or failed) trial stops counting
there, its history ends at that epoch, while its slot keeps computing with the others
until the group ends (when no trial counts any more, the group stops).

Each trial ends as it would alone on Keras's fit on JAX within the tolerance of the step's
mode (``tests/workers/test_packed.py``; the per-layer-kind figures are in
``tests/workers/test_jaxfused.py`` and docs/engines.md).

What it does not take (:func:`not_packable`): sample weights, ``class_weight``, callbacks,
a learning-rate schedule; the runner then trains the group's trials one by one on the
usual engine, each saying why (``engine_fallback``).

Must run in a worker whose ``KERAS_BACKEND`` is ``jax``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clonesweep.trials import (
    EngineFallback,
    FailReason,
    FallbackReason,
    PackedGroup,
    Reporter,
    TrialSpec,
    TrialState,
)
from clonesweep.workers.engines.base import arrays_only
from clonesweep.workers.engines.epochs import Stop, objective_value
from clonesweep.workers.job import WorkerState
from clonesweep.workers.materialize import Materialized, materialize
from clonesweep.workers.streams import StreamData

__all__ = [
    "LEARNING_RATE",
    "NAME",
    "WEIGHT_DECAY",
    "PackedTrial",
    "not_packable",
    "train_packed",
]

#: The engine's name on a trial (``TrialResult.engine``).
NAME = "packed"
#: The param keys a member takes as its own optimizer settings.
LEARNING_RATE = "optimizer.learning_rate"
WEIGHT_DECAY = "optimizer.weight_decay"


@dataclass
class PackedTrial:
    """One trial of a trained group: how it ended and what it trained.

    Attributes:
        spec: The trial.
        materialized: Its materialized config (seeds, config hash).
        state: COMPLETE, PRUNED or FAIL.
        reason: Why it failed (FAIL only).
        message: Why it stopped early, in words.
        value: Its last reported objective value (COMPLETE only).
        history: Its logs per epoch, up to the epoch it stopped counting.
        model: Its trained model (COMPLETE only).
    """

    spec: TrialSpec
    materialized: Materialized
    state: TrialState = TrialState.COMPLETE
    reason: FailReason | None = None
    message: str = ""
    value: float = math.nan
    history: dict[str, list[float]] | None = None
    model: Any = None


def not_packable(state: WorkerState) -> EngineFallback | None:
    """Why this worker's trials cannot train packed (None: they can)."""
    import keras

    tr = state.job.training
    why = ""
    if keras.backend.backend() != "jax":
        return EngineFallback(NAME, FallbackReason.BACKEND,
                              f"packed trials need Keras on JAX; this worker runs "
                              f"{keras.backend.backend()}")
    if isinstance(state.data, StreamData):
        why = f"the data are {state.data.kind.value} datasets (packed trials take arrays)"
    elif state.data.sample_weight is not None or state.data.val_sample_weight is not None:
        why = "the data loader returned sample weights"
    elif tr.class_weight:
        why = "training.class_weight is set"
    elif tr.callbacks:
        why = "training.callbacks are set"
    elif isinstance(tr.optimizer_config.get("learning_rate"), dict):
        why = "the learning rate is a schedule"
    return EngineFallback(NAME, FallbackReason.NOT_COVERED, why) if why else None


def train_packed(state: WorkerState, group: PackedGroup,
                 reporters: Sequence[Reporter]) -> tuple[list[PackedTrial], float, float]:
    """Train ``group`` as one program; returns each trial's outcome, and the group's
    training and validation seconds.

    Raises:
        Exception: anything the fused engine raises (the runner falls back to training the
            trials one by one).
    """
    from clonesweep.workers.engines.jaxfused import FusedPlan, Mode, train_fused_jax

    job, tr = state.job, state.job.training
    trials = [PackedTrial(t, materialize(state.base_config, t.params, t.seed))
              for t in group.trials]
    first = trials[0].materialized
    shared = {k: v for k, v in group.trials[0].params.items() if k not in group.packable}
    plan = FusedPlan(
        epochs=int(first.train.get("epochs", tr.epochs)),
        batch_size=int(first.train.get("batch_size", tr.batch_size)),
        validation_batch_size=tr.validation_batch_size, loss=tr.loss, metrics=tr.metrics,
        optimizer=tr.optimizer, optimizer_config={**tr.optimizer_config, **first.optimizer},
        mode=Mode(group.mode))
    members = [_member(t.spec, group.packable) for t in trials]
    epochs = _Epochs(job.objective.metric, trials, reporters, job.trial_timeout, plan.epochs)
    data = arrays_only(state.data, NAME)
    result = train_fused_jax(state.base_config, members, (data.x, data.y, data.x_val,
                                                          data.y_val), plan, shared,
                             on_epoch=epochs)
    for trial, model in zip(trials, result.models, strict=True):
        if trial.state is TrialState.COMPLETE:
            trial.model = model
    return trials, result.train_s, result.eval_s


def _member(spec: TrialSpec, packable: tuple[str, ...]) -> Any:
    from clonesweep.workers.engines.jaxfused import FusedMember

    own = {k: v for k, v in spec.params.items() if k in packable}
    lr, wd = own.pop(LEARNING_RATE, None), own.pop(WEIGHT_DECAY, None)
    return FusedMember(spec.seed, learning_rate=lr, weight_decay=wd, params=own or None)


class _Epochs:
    """The group's per-epoch hook: each counting trial records its logs, reports its
    objective and may stop counting (pruned, a non-finite loss, the time limit)."""

    def __init__(self, metric: str, trials: list[PackedTrial], reporters: Sequence[Reporter],
                 timeout: float | None, total: int) -> None:
        self.metric, self.trials, self.reporters = metric, trials, reporters
        self.timeout, self.total = timeout, total
        self.started = time.perf_counter()
        for trial in trials:
            trial.history = {}

    def __call__(self, epoch: int, logs: list[dict[str, float]]) -> bool:
        for trial, reporter, own in zip(self.trials, self.reporters, logs, strict=True):
            if trial.state is not TrialState.COMPLETE:
                continue  # stopped counting: its slot computes on, unrecorded
            assert trial.history is not None
            for key, value in own.items():
                trial.history.setdefault(key, []).append(value)
            try:
                trial.value = objective_value(self.metric, own, epoch)
                if reporter.report(epoch, trial.value):
                    raise Stop(TrialState.PRUNED, None, f"pruned after epoch {epoch + 1}")
            except Stop as stop:
                trial.state, trial.reason, trial.message = stop.state, stop.reason, stop.message
        elapsed = time.perf_counter() - self.started
        if self.timeout is not None and elapsed > self.timeout and epoch + 1 < self.total:
            for trial in self.trials:
                if trial.state is TrialState.COMPLETE:
                    trial.state, trial.reason = TrialState.FAIL, FailReason.TIMEOUT
                    trial.message = (f"still training after {self.timeout:g} s "
                                     f"(epoch {epoch + 1}/{self.total})")
        return all(t.state is not TrialState.COMPLETE for t in self.trials)
