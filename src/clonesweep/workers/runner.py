"""Run trials in a long-lived worker process: rebuild, compile, train on an engine, report.

A :class:`TrialRunner` is created once per worker (a Ray actor or the in-process backend's
thread). It imports Keras once, loads the data once, holds the base config, and then runs
trial after trial, calling ``keras.utils.clear_session()`` before each one. It never sees an
Optuna trial: per-epoch values go through a :class:`~clonesweep.trials.Reporter`.

A trial trains on an engine (:mod:`clonesweep.workers.engines.base` states the contract):
Keras's own ``fit`` (:mod:`~clonesweep.workers.engines.kerasfit`, the reference), or, with
``training.reuse_graphs`` on, a traced graph the worker keeps for every trial of the same
layer structure (:mod:`~clonesweep.workers.engines.graphfit`). A trial the graph engine does
not cover, or one it fails on for a reason that is not the user's, trains on Keras's fit,
and its result says so (``engine_fallback``). The per-epoch work (record, check, report, time
limit, checkpoint) is :class:`~clonesweep.workers.engines.epochs.TrialEpochs`. With a
checkpoint folder, a retried trial resumes after its last checkpoint
(:mod:`clonesweep.workers.checkpoint`). Fused ensemble groups go to
:mod:`~clonesweep.workers.engines.jaxgroup` on a JAX worker, else
:mod:`~clonesweep.workers.engines.fused`, handed a :class:`~clonesweep.workers.job.
WorkerState`, never the runner.

About 430 lines, past the usual 300: one class holds a worker's state (data, feeds, kept
models) and a trial's life in it (build, train with the engine fallback, keep), and splitting
it would pass that state around again.
"""

from __future__ import annotations

import gc
import importlib
import json
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from clonesweep.errors import RebuildError
from clonesweep.trials import (
    DataKind,
    EngineFallback,
    FailReason,
    FallbackReason,
    PackedGroup,
    Reporter,
    Timings,
    TrialResult,
    TrialSpec,
    TrialState,
)
from clonesweep.workers.arrays import data_fingerprint, length, take
from clonesweep.workers.backend_setup import configure_backend, environment, import_keras
from clonesweep.workers.checkpoint import Checkpoints
from clonesweep.workers.engines.base import Engine, FitPlan, TrainData, TrialTraining
from clonesweep.workers.engines.epochs import Stop as _Stop
from clonesweep.workers.engines.epochs import TrialEpochs
from clonesweep.workers.engines.feeds import FeedCache
from clonesweep.workers.job import WorkerJob, WorkerState
from clonesweep.workers.keeper import ModelKeeper
from clonesweep.workers.oom import oom_reason
from clonesweep.workers.seeding import DATA_ORDER
from clonesweep.workers.streams import StreamData, batched, first_batch, stream_of

if TYPE_CHECKING:
    import keras

    from clonesweep.workers.member import FusedGroup, MemberOutput
    from clonesweep.workers.rebuild import Variant

__all__ = ["OnTrained", "TrialRunner", "WorkerJob", "import_object"]

#: ``on_trained(number, value, model)``: called once for each trial that completed training,
#: with its number, its objective value and its trained model, before evaluation-time work
#: (latency, keeping the best model). The model is valid only during the call: the next
#: trial's ``clear_session`` frees it; copy what you need (``model.get_weights()``).
#: Called on the runner's thread; an exception it raises propagates out of ``run``.
OnTrained = Callable[[int, float, "keras.Model"], None]


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


class TrialRunner:
    """Runs trials one after another in this process. Not thread-safe: one trial at a time.

    Args:
        job: What every trial of this worker shares (sent once).
        worker: This worker's name, recorded on each result.
        node: This worker's node (default: the host name).
        on_trained: Called with each completed trial's trained model (:data:`OnTrained`),
            e.g. to compare an engine's final variables with Keras's fit's in a test.
    """

    def __init__(self, job: WorkerJob, *, worker: str = "local", node: str | None = None,
                 on_trained: OnTrained | None = None) -> None:
        self.job = job
        self._on_trained = on_trained
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
        self._data: TrainData | StreamData | None = None
        self._data_error: str | None = None
        self._fingerprint = ""
        self.environment = environment()
        self._keeper = ModelKeeper(job.keep_objectives or (job.objective,),
                                   job.keep_constraints)
        self._members: dict[int, MemberOutput] = {}  # keep_members only
        # Structural search: base configs by structure hash, parsed once per worker.
        self._structures: dict[str, dict[str, Any]] = {}
        self._trials_run = 0
        self.feeds = FeedCache()  # built from the data, kept for every trial

    # -- data -------------------------------------------------------------------------
    def _load_data(self) -> TrainData | StreamData:
        if self._data is not None:
            return self._data
        if self._data_error is not None:
            raise _UserError(self._data_error)
        ref = self.job.data.loader
        try:
            loaded = import_object(ref)(**self.job.data.kwargs)
            stream = stream_of(loaded)
            data = stream if stream is not None else TrainData.of(loaded)
            self._fingerprint = (data.fingerprint() if isinstance(data, StreamData)
                                 else data_fingerprint(data.arrays))
        except Exception as exc:
            self._data_error = f"data loader {ref!r} failed: {exc}\n{_short_traceback(exc)}"
            raise _UserError(self._data_error) from exc
        self._data = data
        return data

    @property
    def _data_kind(self) -> DataKind | None:
        if self._data is None:
            return None
        return self._data.kind if isinstance(self._data, StreamData) else DataKind.ARRAYS

    def worker_state(self) -> WorkerState:
        """What this worker holds for all its trials, as engines see it (loads the data).

        Raises:
            _UserError: the data loader failed.
        """
        return WorkerState(self.job, self._base_config, self._load_data(), self.feeds,
                           self.node, self.worker)

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
        result = replace(result, data_fingerprint=self._fingerprint, data_kind=self._data_kind,
                         seeds=dict(mat.seeds),
                         config_hash=mat.config_hash,
                         config_json=json.dumps(mat.config, sort_keys=True),
                         param_count=int(variant.model.count_params()))
        epochs = self._epochs(spec, variant, reporter)
        try:
            variant, epochs = self._train(spec, variant, epochs, reporter)
        except _Stop as stop:
            result = stop.apply(result)
        else:
            if self._on_trained is not None:
                self._on_trained(spec.number, epochs.value, variant.model)
            self._keep_member(spec.number, variant.model)
            result = replace(result, state=TrialState.COMPLETE, value=epochs.value)
        if self.job.measure_latency and result.state is not TrialState.FAIL:
            result = replace(result, inference_latency_ms=self._latency_ms(variant.model))
        clock = epochs.clock
        result = replace(result, history=epochs.history,
                         timings=Timings(build_s, clock.train_s, clock.eval_s),
                         resumed_from_epoch=epochs.resumed_from, engine=epochs.engine,
                         engine_fallback=epochs.fallback)
        if self.job.keep_best and result.state is TrialState.COMPLETE:
            # After the latency: objectives and constraints may read it.
            from clonesweep.workers.member import model_bytes

            self._keeper.offer(spec.number, result,
                               lambda: model_bytes(variant.model, f"trial-{spec.number}"))
        return self._ended(spec, result)

    def _epochs(self, spec: TrialSpec, variant: Variant, reporter: Reporter) -> TrialEpochs:
        return TrialEpochs(self.job, spec, variant, reporter, self._fingerprint,
                           self.environment.get("keras_backend", ""))

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

    def _build(self, spec: TrialSpec) -> tuple[Variant, float]:
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
            oom = oom_reason(exc)
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

    def _latency_ms(self, model: keras.Model, calls: int = 5) -> float | None:
        """Median ms of ``calls`` predict_on_batch calls on the first 32 validation inputs
        (after one warm-up call, which traces the function)."""
        data = self._load_data()
        if isinstance(data, StreamData):  # the first validation batch, as the dataset gives it
            batch = first_batch(data.val if batched(data.val, model) else data.val.batch(32))
            batch = batch[0] if isinstance(batch, tuple) else batch
        else:
            batch = take(data.x_val, np.arange(min(32, length(data.x_val))))
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

    def _compile(self, variant: Variant) -> None:
        from clonesweep.workers.training import compile_trial

        compile_trial(variant, self.job.training)

    # -- training on an engine ----------------------------------------------------------
    def _train(self, spec: TrialSpec, variant: Variant, epochs: TrialEpochs,
               reporter: Reporter) -> tuple[Variant, TrialEpochs]:
        """Train the trial's epochs (after the checkpoint's, when resuming) on the sweep's
        engine, or on Keras's fit when that engine declines it or fails inside it.
        Returns the variant and epochs that trained (new ones after such a failure)."""
        from clonesweep.workers.engines.kerasfit import KerasFit

        engine: Engine = self._engine()
        trial = self._training(variant, epochs)
        try:
            fallback = engine.declines(trial)
        except Exception as exc:  # a bug of the engine's own: Keras's fit takes the trial
            fallback = EngineFallback(engine.name, FallbackReason.ENGINE_ERROR,
                                      f"{type(exc).__name__}: {str(exc)[:300]}")
        if fallback is not None:
            engine = KerasFit()
        epochs.engine, epochs.fallback = engine.name, fallback
        try:
            engine.fit(trial)
        except Exception as exc:
            if engine.name == KerasFit.name or oom_reason(exc) is not None:
                raise self._failed(exc) from exc
            # Rerun from a fresh rebuild on the reference: if the error was the trial's
            # own, Keras's fit meets it too and fails the trial; if not, the trial trains.
            fallback = EngineFallback(engine.name, FallbackReason.ENGINE_ERROR,
                                      f"{type(exc).__name__}: {str(exc)[:300]}")
            variant, _ = self._build(spec)
            epochs = self._epochs(spec, variant, _Reported(reporter, epochs.done))
            epochs.engine, epochs.fallback = KerasFit.name, fallback
            try:
                KerasFit().fit(self._training(variant, epochs))
            except Exception as again:
                raise self._failed(again) from again
        if epochs.clock.error is not None:  # a _Stop, or the reporter's own failure
            raise epochs.clock.error
        return variant, epochs

    def _engine(self) -> Engine:
        if self.job.training.reuse_graphs:
            from clonesweep.workers.engines.graphfit import GraphFit

            return GraphFit()
        from clonesweep.workers.engines.kerasfit import KerasFit

        return KerasFit()

    def _training(self, variant: Variant, epochs: TrialEpochs) -> TrialTraining:
        """The trial as an engine gets it (restores its checkpoint first, on a retry)."""
        from clonesweep.workers.training import build_callbacks

        epochs.resume()
        plan = FitPlan(epochs.total, epochs.batch_size, self.job.training.validation_batch_size,
                       variant.materialized.seeds[DATA_ORDER], start_epoch=epochs.done)
        try:
            callbacks = build_callbacks(self.job.training.callbacks)
        except Exception as exc:
            raise _Stop(TrialState.FAIL, FailReason.INVALID_CONFIG,
                        f"training.callbacks: {type(exc).__name__}: {exc}") from exc
        return TrialTraining(variant.model, self._load_data(), plan, self.job.training, epochs,
                             epochs.clock, self.feeds, callbacks, epochs.before_save)

    @staticmethod
    def _failed(exc: Exception) -> _Stop:
        oom = oom_reason(exc)
        if oom is not None:
            return _Stop(TrialState.FAIL, oom, str(exc)[:500])
        return _Stop(TrialState.FAIL, FailReason.USER_ERROR,
                     f"{type(exc).__name__}: {exc}\n{_short_traceback(exc)}")

    # -- ensemble members (see clonesweep.workers.member and .engines.fused) ---------------
    def _keep_member(self, number: int, model: keras.Model) -> None:
        if not self.job.keep_members:
            return
        from clonesweep.workers.arrays import as_arrays
        from clonesweep.workers.member import MemberOutput, model_bytes, predict, predict_stream

        data = self._load_data()
        if isinstance(data, StreamData):
            pred, y_val = predict_stream(model, data.val, self.job.training.validation_batch_size)
        else:
            pred = predict(model, data.x_val, self.job.training.validation_batch_size)
            y_val = as_arrays(data.y_val)
        self._members[number] = MemberOutput(pred, y_val, model_bytes(model, f"member-{number}"))

    def member_output(self, number: int) -> MemberOutput | None:
        """The kept :class:`~clonesweep.workers.member.MemberOutput` of ``number`` (once)."""
        return self._members.pop(number, None)

    def run_fused(self, group: FusedGroup) -> TrialResult:
        """Train a :class:`~clonesweep.workers.member.FusedGroup`
        (:mod:`clonesweep.workers.engines.jaxgroup` on a JAX worker,
        :mod:`clonesweep.workers.engines.fused` on TensorFlow); never raises for a
        group-level failure.

        Members that cannot be fused are trained one after another on this worker, each
        with that reason as its ``engine_fallback``, and the group's message says why.
        """
        import keras

        from clonesweep.workers.member import MemberOutput

        # Keras fixes its backend per process: a JAX worker trains any model fused
        # (jaxgroup), a TensorFlow one the layers its stacked engine covers (fused).
        if "jax" in (keras.backend.backend(), self.job.keras_backend):
            # (a worker asked for JAX that runs on another backend, as the in-process
            # backend does, gets the JAX engine's BACKEND fallback, saying so)
            from clonesweep.workers.engines.jaxgroup import run_group
        else:
            from clonesweep.workers.engines.fused import run_group

        try:
            state = self.worker_state()
        except _UserError as exc:
            return TrialResult.failed(group.as_spec(), FailReason.USER_ERROR, str(exc))
        run = run_group(state, group)
        if run.unfused is None:
            # Each member records the worker's environment (its Keras backend) as a member
            # trained alone does.
            self._members.update({
                n: replace(out, result=replace(out.result, environment=self.environment))
                if out.result is not None else out for n, out in run.outputs.items()})
            assert run.result is not None
            return run.result
        for member in group.members:
            result = self.run(member, _NoPruning())
            if result.engine:  # it trained: say which engine was asked for, and why not
                result = replace(result, engine_fallback=run.unfused)
            kept = self._members.get(member.number)
            self._members[member.number] = (
                replace(kept, result=result) if kept is not None
                else MemberOutput(np.zeros(0), np.zeros(0), b"", result=result))
        return TrialResult(group.number, TrialState.COMPLETE, attempt=group.attempt,
                           node=self.node, worker=self.worker,
                           message=f"fused training does not apply ({run.unfused}); "
                                   f"trained {len(group.members)} members separately",
                           engine_fallback=run.unfused)

    # -- packed trials (see clonesweep.workers.engines.packed) ----------------------------
    def run_packed(self, group: PackedGroup, reporters: list[Reporter]) -> list[TrialResult]:
        """Train a :class:`~clonesweep.trials.PackedGroup`: one result per trial, in order;
        never raises for a trial-level failure. A group the packed engine does not take, or
        fails inside, trains its trials one by one here (``engine_fallback`` says why)."""
        import keras

        from clonesweep.workers.engines.packed import NAME, not_packable, train_packed

        keras.utils.clear_session()
        try:
            state = self.worker_state()
        except _UserError as exc:
            return [TrialResult.failed(t, FailReason.USER_ERROR, str(exc)) for t in group.trials]
        fallback = not_packable(state)
        if fallback is None:
            t0 = time.perf_counter()
            try:
                trials, train_s, eval_s = train_packed(state, group, reporters)
            except Exception as exc:  # the engine's own: each trial trains alone instead
                fallback = EngineFallback(NAME, FallbackReason.ENGINE_ERROR,
                                          f"{type(exc).__name__}: {str(exc)[:300]}")
            else:
                build_s = time.perf_counter() - t0 - train_s - eval_s
                share = Timings(build_s, train_s, eval_s)  # the group's, split evenly below
                return [self._packed_result(t, group, share) for t in trials]
        results = []
        for trial, reporter in zip(group.trials, reporters, strict=True):
            result = self.run(trial, reporter)
            results.append(replace(result, engine_fallback=fallback) if result.engine
                           else result)
        return results

    def _packed_result(self, trial: Any, group: PackedGroup, share: Timings) -> TrialResult:
        """One packed trial's result, its model offered to the keeper when it completed."""
        k = len(group.trials)
        mat, number = trial.materialized, trial.spec.number
        result = TrialResult(
            number, trial.state, reason=trial.reason, message=trial.message,
            value=trial.value if trial.state is TrialState.COMPLETE else None,
            history=trial.history or {}, seeds=dict(mat.seeds), config_hash=mat.config_hash,
            config_json=json.dumps(mat.config, sort_keys=True), node=self.node,
            worker=self.worker, attempt=trial.spec.attempt, environment=self.environment,
            data_fingerprint=self._fingerprint, engine="packed", packed=(group.number, k),
            timings=Timings(share.build_s / k, share.train_s / k, share.eval_s / k))
        model = trial.model
        if model is None:
            return result
        result = replace(result, param_count=int(model.count_params()))
        if self.job.measure_latency:
            result = replace(result, inference_latency_ms=self._latency_ms(model))
        if self._on_trained is not None:
            self._on_trained(number, result.value or 0.0, model)
        if self.job.keep_best:
            from clonesweep.workers.member import model_bytes

            self._keeper.offer(number, result, lambda: model_bytes(model, f"trial-{number}"))
        return result

    def best_model(self, number: int) -> bytes | None:
        """The ``.keras`` bytes of trial ``number`` if this worker kept it, else None."""
        return self._keeper.get(number)


class _NoPruning:
    def report(self, step: int, value: float) -> bool:
        return False


class _Reported:
    """A reporter for a trial rerun on Keras's fit after an engine's own error: the epochs
    the driver already heard of are not reported again (it would ignore them)."""

    def __init__(self, reporter: Reporter, reported: int) -> None:
        self._reporter, self._reported = reporter, reported

    def report(self, step: int, value: float) -> bool:
        if step < self._reported:
            return False
        return self._reporter.report(step, value)
