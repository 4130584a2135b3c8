"""Run trials in a long-lived worker process: rebuild, compile, fit, evaluate, report.

A :class:`TrialRunner` is created once per worker (a Ray actor or the in-process backend's
thread). It imports Keras once, loads the data once, holds the base config, and then runs
trial after trial, calling ``keras.utils.clear_session()`` before each one. It never sees an
Optuna trial: per-epoch values go through a :class:`~clonesweep.trials.Reporter`.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from clonesweep.errors import RebuildError
from clonesweep.spec.model import DataSpec, Direction, ObjectiveSpec, TrainingSpec
from clonesweep.trials import FailReason, Reporter, Timings, TrialResult, TrialSpec, TrialState
from clonesweep.workers.seeding import DATA_ORDER

__all__ = ["TrialRunner", "WorkerJob", "import_object"]


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs, sent once when it starts.

    Attributes:
        base_config_json: The base model's ``serialize_keras_object`` JSON.
        imports: Modules to import before any rebuild (custom layers register there).
        data: The data loader, called once per worker.
        training: Fixed training settings.
        objective: The metric reported each epoch and returned as the trial's value.
        trial_timeout: Seconds a trial may train before it fails with ``timeout``.
        cpus: CPUs per trial; TensorFlow's thread pools are sized to it.
        keep_best: Keep the best trial's model (as ``.keras`` bytes) for the driver.
    """

    base_config_json: str
    imports: tuple[str, ...]
    data: DataSpec
    training: TrainingSpec
    objective: ObjectiveSpec
    trial_timeout: float | None = None
    cpus: float = 1.0
    keep_best: bool = True


def import_object(ref: str) -> Any:
    """Import ``module:attribute`` (attribute may be dotted)."""
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class _UserError(Exception):
    """Raised inside a trial for an error in user code (data loader, custom layer)."""


class _Stop(Exception):
    """Ends a trial early with a state (pruned, or failed with a reason)."""

    def __init__(self, state: TrialState, reason: FailReason | None, message: str) -> None:
        super().__init__(message)
        self.state, self.reason, self.message = state, reason, message

    def apply(self, result: TrialResult) -> TrialResult:
        return replace(result, state=self.state, reason=self.reason, message=self.message)


def _short_traceback(exc: BaseException, limit: int = 6) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-limit)
    text = "".join(lines)
    return text[-2000:]


def _configure_backend(cpus: float) -> None:
    """Size TensorFlow's thread pools and turn on GPU memory growth, before Keras runs ops."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    import tensorflow as tf

    threads = max(1, int(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        for gpu in tf.config.list_physical_devices("GPU"):
            # Several fractional-GPU trials share a device: don't let one grab it all.
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # TensorFlow already initialized in this process (in-process backend).


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name in ("ResourceExhaustedError", "OutOfMemoryError") or "RESOURCE_EXHAUSTED" in str(
        exc
    )


class TrialRunner:
    """Runs trials one after another in this process. Not thread-safe: one trial at a time."""

    def __init__(self, job: WorkerJob, *, worker: str = "local", node: str | None = None) -> None:
        self.job = job
        self.worker = worker
        self.node = node or socket.gethostname()
        _configure_backend(job.cpus)
        import keras  # noqa: F401  (imported once per worker, here)

        for module in job.imports:
            importlib.import_module(module)
        self._base_config: dict[str, Any] = json.loads(job.base_config_json)
        self._data: tuple[Any, Any, Any, Any] | None = None
        self._data_error: str | None = None
        self._best: tuple[float, int, bytes] | None = None

    # -- data -------------------------------------------------------------------------
    def _load_data(self) -> tuple[Any, Any, Any, Any]:
        if self._data is not None:
            return self._data
        if self._data_error is not None:
            raise _UserError(self._data_error)
        ref = self.job.data.loader
        try:
            loaded = import_object(ref)(**self.job.data.kwargs)
            if not isinstance(loaded, (tuple, list)) or len(loaded) != 4:
                raise TypeError(
                    f"expected (x_train, y_train, x_val, y_val), got {type(loaded).__name__}"
                    + (f" of length {len(loaded)}" if isinstance(loaded, (tuple, list)) else "")
                )
        except Exception as exc:
            self._data_error = f"data loader {ref!r} failed: {exc}\n{_short_traceback(exc)}"
            raise _UserError(self._data_error) from exc
        self._data = (loaded[0], loaded[1], loaded[2], loaded[3])
        return self._data

    # -- one trial ----------------------------------------------------------------------
    def run(self, spec: TrialSpec, reporter: Reporter) -> TrialResult:
        """Run one trial to its end; never raises for a trial-level failure."""
        import keras

        keras.utils.clear_session()
        result = TrialResult(spec.number, TrialState.FAIL, attempt=spec.attempt,
                             node=self.node, worker=self.worker)
        try:
            variant, build_s = self._build(spec)
        except _Stop as stop:
            return stop.apply(result)
        mat = variant.materialized
        result = replace(result, seeds=dict(mat.seeds), config_hash=mat.config_hash,
                         config_json=json.dumps(mat.config, sort_keys=True),
                         param_count=int(variant.model.count_params()))
        history: dict[str, list[float]] = {}
        clock = {"train": 0.0, "eval": 0.0}
        try:
            value = self._train(variant, reporter, history, clock)
        except _Stop as stop:
            result = stop.apply(result)
        else:
            self._keep_if_best(spec.number, value, variant.model)
            result = replace(result, state=TrialState.COMPLETE, value=value)
        return replace(result, history=history,
                       timings=Timings(build_s, clock["train"], clock["eval"]))

    def _build(self, spec: TrialSpec) -> tuple[Any, float]:
        from clonesweep.workers.rebuild import rebuild

        t0 = time.perf_counter()
        try:
            self._load_data()
        except _UserError as exc:
            raise _Stop(TrialState.FAIL, FailReason.USER_ERROR, str(exc)) from exc
        try:
            variant = rebuild(self._base_config, spec.params, seed=spec.seed)
            self._compile(variant)
        except RebuildError as exc:
            raise _Stop(TrialState.FAIL, FailReason.INVALID_CONFIG, str(exc)) from exc
        except Exception as exc:
            if _is_oom(exc):
                raise _Stop(TrialState.FAIL, FailReason.OOM, str(exc)[:500]) from exc
            # Keras refuses the values (a negative unit count, an unknown activation...).
            raise _Stop(TrialState.FAIL, FailReason.INVALID_CONFIG,
                        f"{type(exc).__name__}: {exc}") from exc
        return variant, time.perf_counter() - t0

    def _compile(self, variant: Any) -> None:
        import keras

        tr = self.job.training
        settings = {**tr.optimizer_config, **variant.materialized.optimizer}
        # A registered name ("adam", "Adam", or a custom registered optimizer), rebuilt
        # through Keras's deserializer, which runs in safe mode by default.
        optimizer = keras.optimizers.get({"class_name": tr.optimizer, "config": settings})
        steps = int(variant.materialized.train.get("steps_per_execution",
                                                   tr.steps_per_execution))
        variant.model.compile(optimizer=optimizer, loss=tr.loss, metrics=list(tr.metrics),
                              steps_per_execution=steps, jit_compile=tr.jit_compile)

    def _train(self, variant: Any, reporter: Reporter,
               history: dict[str, list[float]], clock: dict[str, float]) -> float:
        x_tr, y_tr, x_va, y_va = self._load_data()
        tr = self.job.training
        train = variant.materialized.train
        epochs = int(train.get("epochs", tr.epochs))
        batch = int(train.get("batch_size", tr.batch_size))
        rng = np.random.default_rng(variant.materialized.seeds[DATA_ORDER])
        n = _length(x_tr)
        started = time.perf_counter()
        value = math.nan
        for epoch in range(epochs):
            order = rng.permutation(n)
            logs = self._guarded(partial(self._fit_epoch, variant.model, x_tr, y_tr, order,
                                         batch, epoch), clock, "train")
            val = self._guarded(partial(variant.model.evaluate, x_va, y_va,
                                        batch_size=tr.validation_batch_size, verbose=0,
                                        return_dict=True), clock, "eval")
            logs.update({f"val_{k}": v for k, v in val.items()})
            for key, v in logs.items():
                history.setdefault(key, []).append(float(v))
            value = self._objective(logs, epoch)
            if reporter.report(epoch, value):
                raise _Stop(TrialState.PRUNED, None, f"pruned after epoch {epoch + 1}")
            limit = self.job.trial_timeout
            if limit is not None and time.perf_counter() - started > limit and epoch + 1 < epochs:
                raise _Stop(TrialState.FAIL, FailReason.TIMEOUT,
                            f"still training after {limit:g} s (epoch {epoch + 1}/{epochs})")
        return value

    @staticmethod
    def _fit_epoch(model: Any, x: Any, y: Any, order: np.ndarray, batch: int,
                   epoch: int) -> dict[str, float]:
        hist = model.fit(_take(x, order), _take(y, order), batch_size=batch, epochs=epoch + 1,
                         initial_epoch=epoch, shuffle=False, verbose=0)
        return {k: float(v[-1]) for k, v in hist.history.items()}

    @staticmethod
    def _guarded(fn: Callable[[], Any], clock: dict[str, float], phase: str) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        except _Stop:
            raise
        except Exception as exc:
            if _is_oom(exc):
                raise _Stop(TrialState.FAIL, FailReason.OOM, str(exc)[:500]) from exc
            raise _Stop(TrialState.FAIL, FailReason.USER_ERROR,
                        f"{type(exc).__name__}: {exc}\n{_short_traceback(exc)}") from exc
        finally:
            clock[phase] += time.perf_counter() - t0

    def _objective(self, logs: dict[str, float], epoch: int) -> float:
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise _Stop(TrialState.FAIL, FailReason.NAN_LOSS,
                        f"loss became {loss} in epoch {epoch + 1}")
        metric = self.job.objective.metric
        if metric not in logs:
            raise _Stop(TrialState.FAIL, FailReason.USER_ERROR,
                        f"objective metric {metric!r} is not among the metrics training "
                        f"produced: {sorted(logs)}")
        value = logs[metric]
        if not math.isfinite(value):
            raise _Stop(TrialState.FAIL, FailReason.NAN_LOSS,
                        f"objective {metric} became {value} in epoch {epoch + 1}")
        return value

    # -- best model ---------------------------------------------------------------------
    def _keep_if_best(self, number: int, value: float, model: Any) -> None:
        if not self.job.keep_best:
            return
        better = (self._best is None or
                  (value > self._best[0] if self.job.objective.direction is Direction.MAXIMIZE
                   else value < self._best[0]))
        if not better:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"trial-{number}.keras")
            model.save(path)
            with open(path, "rb") as fh:
                self._best = (value, number, fh.read())

    def best_model(self, number: int) -> bytes | None:
        """The ``.keras`` bytes of trial ``number`` if it is this worker's best, else None."""
        if self._best is not None and self._best[1] == number:
            return self._best[2]
        return None


def _length(x: Any) -> int:
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    if isinstance(x, (tuple, list)):
        return len(x[0])
    return len(x)


def _take(x: Any, order: np.ndarray) -> Any:
    if isinstance(x, dict):
        return {k: np.asarray(v)[order] for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(np.asarray(v)[order] for v in x)
    return np.asarray(x)[order]

