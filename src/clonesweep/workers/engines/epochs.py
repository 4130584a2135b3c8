"""A trial's per-epoch work, done at each epoch's end inside its single ``fit`` call.

:class:`TrialEpochs` is the hook :class:`clonesweep.workers.engines.kerasfit.EpochEnd` calls: it
records the epoch's logs, checks the objective (``nan_loss``), reports it (pruning), enforces
the trial's time limit, and writes a checkpoint when one is due. A retry restores the
trial's checkpoint first (:meth:`TrialEpochs.resume`). It ends a trial by raising
:class:`Stop`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from clonesweep.trials import (
    EngineFallback,
    FailReason,
    Reporter,
    TrialResult,
    TrialSpec,
    TrialState,
)
from clonesweep.workers.checkpoint import Checkpoints, Saved, checkpoint_key
from clonesweep.workers.engines.base import FitClock

if TYPE_CHECKING:
    from clonesweep.workers.job import WorkerJob
    from clonesweep.workers.rebuild import Variant

__all__ = ["Stop", "TrialEpochs", "objective_value", "output_means"]


class Stop(Exception):
    """Ends a trial early with a state (pruned, or failed with a reason)."""

    def __init__(self, state: TrialState, reason: FailReason | None, message: str) -> None:
        super().__init__(message)
        self.state, self.reason, self.message = state, reason, message

    def apply(self, result: TrialResult) -> TrialResult:
        return replace(result, state=self.state, reason=self.reason, message=self.message)


def objective_value(metric: str, logs: dict[str, float], epoch: int) -> float:
    """The epoch's objective value; raises :class:`Stop` for a non-finite loss or objective
    (``nan_loss``) and for a metric training does not log (``user_error``)."""
    loss = logs.get("loss")
    if loss is not None and not math.isfinite(loss):
        raise Stop(TrialState.FAIL, FailReason.NAN_LOSS,
                   f"loss became {loss} in epoch {epoch + 1}")
    if metric not in logs:
        raise Stop(TrialState.FAIL, FailReason.USER_ERROR,
                   f"objective metric {metric!r} is not among the metrics training "
                   f"produced: {sorted(logs)}")
    value = logs[metric]
    if not math.isfinite(value):
        raise Stop(TrialState.FAIL, FailReason.NAN_LOSS,
                   f"objective {metric} became {value} in epoch {epoch + 1}")
    return value


def output_means(metrics: tuple[str, ...], logs: dict[str, float],
                 outputs: list[str]) -> dict[str, float]:
    """For a model of several outputs, each of ``metrics`` training does not log by that
    name (``val_accuracy``) but logs per output (``val_a_accuracy``, ``val_b_accuracy``): the
    mean over the outputs, by its own name. The objective of a multi-output model is then
    that mean, recorded in the history like any metric.

    >>> output_means(("val_accuracy",), {"val_a_accuracy": 1.0, "val_b_accuracy": 0.5},
    ...              ["a", "b"])
    {'val_accuracy': 0.75}
    """
    means: dict[str, float] = {}
    if len(outputs) < 2:
        return means
    for metric in metrics:
        if metric in logs:
            continue
        prefix = "val_" if metric.startswith("val_") else ""
        base = metric[len(prefix):]
        keys = [f"{prefix}{out}_{base}" for out in outputs]
        if all(k in logs for k in keys):
            means[metric] = sum(logs[k] for k in keys) / len(keys)
    return means


class TrialEpochs:
    """One trial's epochs: its history so far and what happens at each epoch's end.

    Args:
        job: The worker's :class:`~clonesweep.workers.runner.WorkerJob`.
        spec: The trial.
        variant: The rebuilt, compiled model and its materialized config.
        reporter: Where each epoch's objective goes (and the pruning decision comes from).
        data_fingerprint: The loaded data's hash (part of the checkpoint key).
        backend: The Keras backend's name (part of the checkpoint key).
    """

    def __init__(self, job: WorkerJob, spec: TrialSpec, variant: Variant, reporter: Reporter,
                 data_fingerprint: str, backend: str) -> None:
        mat = variant.materialized
        self.job, self.spec, self.reporter = job, spec, reporter
        self.model = variant.model
        self.total = int(mat.train.get("epochs", job.training.epochs))
        self.batch_size = int(mat.train.get("batch_size", job.training.batch_size))
        self.history: dict[str, list[float]] = {}
        self.value = math.nan
        self.done = 0  # epochs trained, restored ones included
        self.resumed_from: int | None = None
        self.clock = FitClock()
        self.store = (Checkpoints(job.checkpoint_dir, job.checkpoint_every_s)
                      if job.checkpoint_dir is not None else None)
        # Everything that decides the trial's arithmetic: a checkpoint of other settings
        # (a changed sweep file, other data) is not resumed.
        self.key = checkpoint_key(
            number=spec.number, seed=spec.seed, config_hash=mat.config_hash,
            data=data_fingerprint, train=mat.train, optimizer=mat.optimizer,
            training=dataclasses.asdict(job.training), backend=backend)
        self.started = self.saved_at = time.perf_counter()
        # Run before a checkpoint reads the model: a trainer that keeps the state elsewhere
        # (clonesweep.workers.engines.graphfit) copies it into the model first.
        self.before_save: list[Callable[[], None]] = []
        # The metrics the trial is judged by (a multi-output model gets their per-output mean).
        self._metrics = tuple(dict.fromkeys(
            [job.objective.metric, *(o.metric for o in job.keep_objectives),
             *(c.metric for c in job.keep_constraints)]))
        self.engine = ""  # the engine that trains it (TrialResult.engine)
        self.fallback: EngineFallback | None = None  # TrialResult.engine_fallback

    def resume(self) -> None:
        """On a retry, continue after the trial's checkpoint if it has a matching one."""
        if self.store is None or self.spec.attempt == 0:
            return
        saved = self.store.load(self.spec.number, self.key)
        if saved is None or not 0 < saved.epochs_done < self.total or not self._restore(saved):
            return
        self.history = {k: list(v) for k, v in saved.history.items()}
        self.done = self.resumed_from = saved.epochs_done

    def _restore(self, saved: Saved) -> bool:
        import keras

        optimizer = self.model.optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        variables = [*self.model.variables, *optimizer.variables]
        arrays = [*saved.model, *saved.optimizer]
        if ((len(self.model.variables), len(optimizer.variables))
                != (len(saved.model), len(saved.optimizer))
                or any(tuple(v.shape) != a.shape
                       for v, a in zip(variables, arrays, strict=True))):
            return False  # another model or optimizer: start over
        for variable, array in zip(variables, arrays, strict=True):
            variable.assign(keras.ops.convert_to_tensor(array, dtype=variable.dtype))
        return True

    def __call__(self, epoch: int, logs: dict[str, float]) -> bool:
        """The end of ``epoch``; returns False (a stop is raised as :class:`Stop`)."""
        logs = {**logs, **output_means(self._metrics, logs,
                                       list(getattr(self.model, "output_names", None) or []))}
        for key, v in logs.items():
            self.history.setdefault(key, []).append(v)
        self.done = epoch + 1
        self.value = objective_value(self.job.objective.metric, logs, epoch)
        if self.reporter.report(epoch, self.value):
            raise Stop(TrialState.PRUNED, None, f"pruned after epoch {epoch + 1}")
        now = time.perf_counter()
        limit = self.job.trial_timeout
        if limit is not None and now - self.started > limit and self.done < self.total:
            raise Stop(TrialState.FAIL, FailReason.TIMEOUT,
                       f"still training after {limit:g} s (epoch {self.done}/{self.total})")
        if (self.store is not None and self.done < self.total
                and now - self.saved_at >= self.store.every_s):
            self._save()
        return False

    def _save(self) -> None:
        def arrays(variables: list[Any]) -> list[np.ndarray]:
            return [np.asarray(v.numpy()) for v in variables]

        assert self.store is not None
        for sync in self.before_save:
            sync()
        self.store.save(self.spec.number, self.key, self.done, self.history,
                        arrays(self.model.variables), arrays(self.model.optimizer.variables))
        self.saved_at = time.perf_counter()
