"""Run trials in a long-lived worker process: rebuild, compile, fit, evaluate, report.

A :class:`TrialRunner` is created once per worker (a Ray actor or the in-process backend's
thread). It imports Keras once, loads the data once, holds the base config, and then runs
trial after trial, calling ``keras.utils.clear_session()`` before each one. It never sees an
Optuna trial: per-epoch values go through a :class:`~clonesweep.trials.Reporter`.

A trial trains in one ``model.fit`` call (:mod:`clonesweep.workers.engines.kerasfit`), or, when its
layers allow, on a traced graph the worker keeps for every trial of the same layer structure
(:mod:`clonesweep.workers.engines.graphfit`, same numbers, no tracing per trial); the per-epoch
work (record, check, report, time limit, checkpoint) is
:class:`~clonesweep.workers.engines.epochs.TrialEpochs`, which Keras calls at each epoch's end.
With a checkpoint folder, a retried trial resumes after its last checkpoint
(:mod:`clonesweep.workers.checkpoint`).
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from clonesweep.errors import RebuildError
from clonesweep.spec.model import ConstraintSpec, DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import FailReason, Reporter, Timings, TrialResult, TrialSpec, TrialState
from clonesweep.workers.arrays import data_fingerprint, length, take
from clonesweep.workers.backend_setup import configure_backend, environment, import_keras
from clonesweep.workers.checkpoint import Checkpoints
from clonesweep.workers.engines.epochs import Stop as _Stop
from clonesweep.workers.engines.epochs import TrialEpochs
from clonesweep.workers.keeper import ModelKeeper
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
        keep_best: Keep the models that may be the study's answer (as ``.keras`` bytes) for
            the driver: see :mod:`clonesweep.workers.keeper`.
        keep_objectives: The sweep's objectives (empty: ``objective`` alone), which
            ``keep_best`` ranks by.
        keep_constraints: The sweep's constraints: only trials meeting them are kept.
        versions: The driver's ``(name, version)`` pairs (see
            :func:`clonesweep.workers.versions.runtime_versions`); a worker whose own differ
            refuses to start. Empty: no check.
        gpu_memory_fraction: The share of a GPU's memory this worker may use (JAX, PyTorch;
            TensorFlow grows on demand instead); None: no cap.
        keep_members: Keep every completed trial's validation predictions and ``.keras``
            bytes for the driver (ensemble members; see :mod:`clonesweep.workers.member`).
        measure_latency: After training (complete or pruned), time inference: the median
            of a few ``predict_on_batch`` calls on the first validation inputs.
        checkpoint_dir: Absolute folder for per-epoch checkpoints (one every node reaches, on
            a cluster); None: no checkpoints, a retry starts from epoch 0.
        checkpoint_every_s: Write a trial's checkpoint after an epoch only when this many
            seconds passed since its last one (0: after every epoch but the last).
        retries: The driver's retries per trial: a retryable failure of an attempt below it
            keeps its checkpoint for the retry; every other end deletes it.
        await_pruning: Per-epoch reports wait for the driver's pruning decision. False
            when no decision can stop a trial (no pruner, or a multi-objective sweep): the
            report is sent and training goes on at once, saving a round trip per epoch.
    """

    base_config_json: str
    imports: tuple[str, ...]
    data: DataSpec
    training: TrainingSpec
    objective: ObjectiveSpec
    trial_timeout: float | None = None
    cpus: float = 1.0
    keep_best: bool = True
    versions: tuple[tuple[str, str], ...] = ()
    gpu_memory_fraction: float | None = None
    keep_members: bool = False
    measure_latency: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every_s: float = 30.0
    retries: int = 0
    await_pruning: bool = True
    keep_objectives: tuple[ObjectiveSpec, ...] = ()
    keep_constraints: tuple[ConstraintSpec, ...] = ()


def import_object(ref: str) -> Any:
    """Import ``module:attribute`` (attribute may be dotted)."""
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class _UserError(Exception):
    """Raised inside a trial for an error in user code (data loader, custom layer)."""


def _short_traceback(exc: BaseException, limit: int = 6) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-limit)
    text = "".join(lines)
    return text[-2000:]


def _oom_reason(exc: BaseException) -> FailReason | None:
    """``OOM`` (host memory), ``GPU_OOM`` (accelerator memory), or None (not memory).

    Device allocators report running out as TensorFlow's ``ResourceExhaustedError``, XLA's
    ``RESOURCE_EXHAUSTED`` (JAX; its text often names no device) or PyTorch's
    ``OutOfMemoryError`` ("CUDA out of memory"); only a text naming the CPU makes one of
    those a host OOM. Python's MemoryError is always the host.
    """
    if isinstance(exc, MemoryError):
        return FailReason.OOM
    if not _is_oom(exc):
        return None
    text = f"{type(exc).__name__}: {exc}"
    on_cpu = "device:CPU" in text or "allocator cpu" in text or "on CPU" in text
    return FailReason.OOM if on_cpu else FailReason.GPU_OOM


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
        configure_backend(job.cpus, job.gpu_memory_fraction)
        keras = import_keras()  # imported once per worker, here

        if job.versions:
            from clonesweep.workers.versions import check_versions, runtime_versions

            check_versions(job.versions, runtime_versions(keras.backend.backend()),
                           where=f"{worker} (node {self.node})")

        for module in job.imports:
            importlib.import_module(module)
        # Keras, its backend and the user's modules live as long as the worker: exempt
        # them from collection now, so that the first trials' clear_session() (a full
        # collection) scans their own objects only (~0.25 s less for each of the first
        # two trials with TensorFlow). The second trial freezes the first's survivors.
        gc.freeze()
        self._base_config: dict[str, Any] = json.loads(job.base_config_json)
        self._data: tuple[Any, Any, Any, Any] | None = None
        self._data_error: str | None = None
        self._fingerprint = ""
        self.environment = environment()
        self._keeper = ModelKeeper(job.keep_objectives or (job.objective,),
                                   job.keep_constraints)
        self._members: dict[int, Any] = {}  # number -> MemberOutput (keep_members only)
        # Structural search: base configs by structure hash, parsed once per worker.
        self._structures: dict[str, dict[str, Any]] = {}
        self._trials_run = 0
        self._feed_cache: dict[Any, Any] = {}  # built from the data, kept for every trial

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
        self._fingerprint = data_fingerprint(self._data)
        return self._data

    # -- one trial ----------------------------------------------------------------------
    def run(self, spec: TrialSpec, reporter: Reporter) -> TrialResult:
        """Run one trial to its end; never raises for a trial-level failure."""
        import keras

        keras.utils.clear_session()  # and gc.collect(): the last trial's model is garbage now
        self._trials_run += 1
        if self._trials_run == 2:
            # What survived the first trial (TensorFlow's lazily imported parts, the data,
            # traced functions) lives as long as the worker: exempt it from collection. A
            # full collection then scans only a trial's own objects (~15 ms instead of
            # ~250 ms per trial with TensorFlow; measured in bench/one_fit_ab.py).
            gc.freeze()
        result = TrialResult(spec.number, TrialState.FAIL, attempt=spec.attempt,
                             node=self.node, worker=self.worker,
                             environment=self.environment)
        try:
            variant, build_s = self._build(spec)
        except _Stop as stop:
            return self._ended(spec, stop.apply(result))
        mat = variant.materialized
        result = replace(result, data_fingerprint=self._fingerprint, seeds=dict(mat.seeds),
                         config_hash=mat.config_hash,
                         config_json=json.dumps(mat.config, sort_keys=True),
                         param_count=int(variant.model.count_params()))
        epochs = TrialEpochs(self.job, spec, variant, reporter, self._fingerprint,
                             self.environment.get("keras_backend", ""))
        try:
            value = self._train(variant, epochs)
        except _Stop as stop:
            result = stop.apply(result)
        else:
            self._keep_member(spec.number, variant.model)
            result = replace(result, state=TrialState.COMPLETE, value=value)
        if self.job.measure_latency and result.state is not TrialState.FAIL:
            result = replace(result, inference_latency_ms=self._latency_ms(variant.model))
        clock = epochs.clock
        result = replace(result, history=epochs.history,
                         timings=Timings(build_s, clock.train_s, clock.eval_s),
                         resumed_from_epoch=epochs.resumed_from, engine=epochs.engine)
        if self.job.keep_best and result.state is TrialState.COMPLETE:
            # After the latency: objectives and constraints may read it.
            self._keeper.offer(spec.number, result, lambda: _saved(variant.model, spec.number))
        return self._ended(spec, result)

    def _ended(self, spec: TrialSpec, result: TrialResult) -> TrialResult:
        """Delete the trial's checkpoint unless the driver will retry this failure."""
        store = self._checkpoints()
        retried = (result.state is TrialState.FAIL and result.reason is not None
                   and result.reason.retryable and spec.attempt < self.job.retries)
        if store is not None and not retried:
            store.delete(spec.number)
        return result

    def _checkpoints(self) -> Checkpoints | None:
        if self.job.checkpoint_dir is None:
            return None
        return Checkpoints(self.job.checkpoint_dir, self.job.checkpoint_every_s)

    def _build(self, spec: TrialSpec) -> tuple[Any, float]:
        from clonesweep.workers.rebuild import rebuild

        t0 = time.perf_counter()
        try:
            self._load_data()
        except _UserError as exc:
            raise _Stop(TrialState.FAIL, FailReason.USER_ERROR, str(exc)) from exc
        base = self._base_for(spec)
        try:
            variant = rebuild(base, spec.params, seed=spec.seed)
            self._compile(variant)
        except RebuildError as exc:
            raise _Stop(TrialState.FAIL, FailReason.INVALID_CONFIG, str(exc)) from exc
        except Exception as exc:
            oom = _oom_reason(exc)
            if oom is not None:
                raise _Stop(TrialState.FAIL, oom, str(exc)[:500]) from exc
            # Keras refuses the values (a negative unit count, an unknown activation...).
            raise _Stop(TrialState.FAIL, FailReason.INVALID_CONFIG,
                        f"{type(exc).__name__}: {exc}") from exc
        return variant, time.perf_counter() - t0

    def _base_for(self, spec: TrialSpec) -> dict[str, Any]:
        """The job's base config, or the trial's structure (cached by its hash)."""
        if spec.structure is None:
            return self._base_config
        config = self._structures.get(spec.structure)
        if config is None:
            if spec.structure_config_json is None:
                # The backend sends a structure once per worker: this one restarted since.
                raise _Stop(TrialState.FAIL, FailReason.WORKER_DIED,
                            f"structure {spec.structure[:12]} was not sent to this worker "
                            "(restarted?); a retry sends it again")
            config = json.loads(spec.structure_config_json)
            self._structures[spec.structure] = config
        return config

    def _latency_ms(self, model: Any, calls: int = 5) -> float | None:
        """Median ms of ``calls`` predict_on_batch calls on the first 32 validation inputs
        (after one warm-up call, which traces the function)."""
        _, _, x_va, _ = self._load_data()
        batch = take(x_va, np.arange(min(32, length(x_va))))
        try:
            model.predict_on_batch(batch)
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                model.predict_on_batch(batch)
                times.append((time.perf_counter() - t0) * 1000.0)
        except Exception:  # a model that cannot predict has no latency; the driver says so
            return None
        return float(np.median(times))

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

    def _train(self, variant: Any, epochs: TrialEpochs) -> float:
        """Fit the trial's epochs (after the checkpoint's, when resuming); its last value."""
        from clonesweep.workers.engines.kerasfit import FitPlan, fit_trial

        data = self._load_data()
        epochs.resume()
        plan = FitPlan(epochs.total, epochs.batch_size, self.job.training.validation_batch_size,
                       variant.materialized.seeds[DATA_ORDER], start_epoch=epochs.done)
        tr = self.job.training
        try:
            structure, epochs.engine = self._graph_structure(variant.model, data)
            if structure is None:
                fit_trial(variant.model, data, plan, epochs, epochs.clock, self._feed_cache)
            else:
                from clonesweep.workers.engines.graphfit import fit_trial_reused

                fit_trial_reused(variant.model, data, plan, epochs, epochs.clock,
                                 self._feed_cache, structure, tr.loss, tr.metrics,
                                 epochs.before_save)
        except Exception as exc:
            oom = _oom_reason(exc)
            if oom is not None:
                raise _Stop(TrialState.FAIL, oom, str(exc)[:500]) from exc
            raise _Stop(TrialState.FAIL, FailReason.USER_ERROR,
                        f"{type(exc).__name__}: {exc}\n{_short_traceback(exc)}") from exc
        if epochs.clock.error is not None:  # a _Stop, or the reporter's own failure
            raise epochs.clock.error
        return epochs.value

    def _graph_structure(self, model: Any, data: Any) -> tuple[Any, str]:
        """The trial's layer structure when it can train on a shared traced graph
        (:mod:`clonesweep.workers.engines.graphfit`), else None; and the engine's name for the
        trial's record (``keras: <why not graph>`` when reuse was on)."""
        tr = self.job.training
        if not tr.reuse_graphs:
            return None, "keras"
        from clonesweep.workers.engines.graphfit import reuse_blocker, structure_of

        why = reuse_blocker(model, data, tr.loss, tr.metrics, tr.jit_compile)
        if why is not None:
            return None, f"keras: {why}"
        return structure_of(model, data, tr.loss, tr.metrics), "graph"

    # -- best model ---------------------------------------------------------------------
    # -- ensemble members (see clonesweep.workers.member and .fused) ------------------------
    def _keep_member(self, number: int, model: Any) -> None:
        if not self.job.keep_members:
            return
        from clonesweep.workers.member import MemberOutput, model_bytes, predict

        _, _, x_va, y_va = self._load_data()
        pred = predict(model, x_va, self.job.training.validation_batch_size)
        self._members[number] = MemberOutput(pred, np.asarray(y_va),
                                             model_bytes(model, f"member-{number}"))

    def member_output(self, number: int) -> Any:
        """The kept :class:`~clonesweep.workers.member.MemberOutput` of ``number`` (once)."""
        return self._members.pop(number, None)

    def run_fused(self, group: Any) -> TrialResult:
        """Train a :class:`~clonesweep.workers.member.FusedGroup`; see workers/fused.py."""
        from clonesweep.workers.engines.fused import run_group

        return run_group(self, group)

    def best_model(self, number: int) -> bytes | None:
        """The ``.keras`` bytes of trial ``number`` if this worker kept it, else None."""
        return self._keeper.get(number)


def _saved(model: Any, number: int) -> bytes:
    """``model`` as ``.keras`` archive bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"trial-{number}.keras")
        model.save(path)
        with open(path, "rb") as fh:
            return fh.read()
