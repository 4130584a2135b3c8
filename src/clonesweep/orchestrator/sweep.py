"""The sweep loop: ask -> submit -> collect -> tell, with the driver as the study's only writer.

One trial's state lives in one place: from ``ask`` to ``tell`` it is an entry of
``_Loop.inflight`` (its Optuna trial and the spec its worker runs). Retries reuse the entry.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import optuna

from clonesweep.errors import SweepFailed
from clonesweep.orchestrator.backends.base import Backend
from clonesweep.orchestrator.commands.validate import check_resume_compatible
from clonesweep.orchestrator.runfolder import RunFolder
from clonesweep.orchestrator.search import (
    DriverFailure,
    TrialMaker,
    best_so_far,
    constraint_values,
    enqueue,
    measures_latency,
    monitored_objective,
    objective_values,
    warm_start,
)
from clonesweep.orchestrator.signals import Interrupts
from clonesweep.orchestrator.study.lease import Lease
from clonesweep.orchestrator.study.outbox import STORAGE_ERRORS, Outbox
from clonesweep.orchestrator.study.resume import (
    BUDGET_ATTR,
    counted,
    fail_and_requeue,
    recover_stale,
    requeued_seed,
    reseed_sampler,
)
from clonesweep.orchestrator.study.storage import (
    commit,
    fixed_params,
    make_pruner,
    make_sampler,
    mask_url,
    open_study,
    set_user_attrs,
    storage_url,
)
from clonesweep.spec.model import Direction, SweepSpec
from clonesweep.trials import FailReason, Intermediate, TrialResult, TrialSpec, TrialState
from clonesweep.workers.materialize import canonical_hash
from clonesweep.workers.runner import WorkerJob
from clonesweep.workers.seeding import derive_seed

__all__ = ["BestTrial", "Counts", "NullProgress", "Progress", "RunOptions", "SweepOutcome",
           "run_sweep"]

# Stop asking after this many user errors in a row with nothing completed: the data loader
# or a custom layer is broken, and every further trial would fail the same way.
_USER_ERRORS_BEFORE_ABORT = 3


@dataclass
class Counts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    retried: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


@dataclass(frozen=True)
class RunOptions:
    """How a driver runs a sweep, beyond the sweep file.

    Attributes:
        takeover: Take the sweep over even if another driver's lease is fresh.
        add_trials: Extend the budget: the larger of ``sweep.trials`` and the budget the last
            driver ran to, plus this many.
        grace: Seconds running trials may take to finish after Ctrl-C / SIGTERM before they
            are cancelled (and re-queued).
    """

    takeover: bool = False
    add_trials: int = 0
    grace: float = 30.0


@dataclass(frozen=True)
class BestTrial:
    number: int
    value: float
    params: dict[str, Any]


@dataclass(frozen=True)
class SweepOutcome:
    name: str
    storage: str
    run_folder: Path
    counts: Counts
    budget: int
    already_finished: int
    best: BestTrial | None
    best_model: Path | None
    wall_s: float
    trial_s: dict[str, float]
    failures: dict[str, int] = field(default_factory=dict)


class Progress(Protocol):
    """Receives the sweep's events, in the driver's thread. Must not raise."""

    def on_start(self, spec: SweepSpec, storage: str, already_finished: int) -> None: ...

    def on_trial_start(self, spec: TrialSpec) -> None: ...

    def on_trial_end(self, result: TrialResult, counts: Counts, best: BestTrial | None,
                     retried: bool) -> None: ...

    def on_tick(self, counts: Counts, best: BestTrial | None, elapsed: float) -> None: ...

    def on_end(self, outcome: SweepOutcome) -> None: ...


class NullProgress:
    def on_start(self, spec: SweepSpec, storage: str, already_finished: int) -> None: ...
    def on_trial_start(self, spec: TrialSpec) -> None: ...
    def on_trial_end(self, result: TrialResult, counts: Counts, best: BestTrial | None,
                     retried: bool) -> None: ...
    def on_tick(self, counts: Counts, best: BestTrial | None, elapsed: float) -> None: ...
    def on_end(self, outcome: SweepOutcome) -> None: ...


@dataclass
class _InFlight:
    trial: optuna.trial.Trial
    spec: TrialSpec
    params: dict[str, Any]  # every active key, switch.* and model.* included
    reported: set[int] = field(default_factory=set)  # epochs recorded as intermediate values


def _finished_states() -> tuple[optuna.trial.TrialState, ...]:
    S = optuna.trial.TrialState
    return (S.COMPLETE, S.PRUNED, S.FAIL)


class _Loop:
    def __init__(self, spec: SweepSpec, study: optuna.Study, backend: Backend,
                 folder: RunFolder, progress: Progress, budget: int, lease: Lease,
                 interrupts: Interrupts) -> None:
        self.spec, self.study, self.backend = spec, study, backend
        self.folder, self.progress = folder, progress
        self.budget, self.lease, self.interrupts = budget, lease, interrupts
        self.maker = TrialMaker(spec)
        self.inflight: dict[int, _InFlight] = {}
        self.counts = Counts()
        self.failures: dict[str, int] = {}
        found = best_so_far(study, spec)
        self.best = BestTrial(*found) if found else None
        # A grid or brute-force sampler that has visited every point ends the sweep early.
        self.exhausted = False
        self.structures_stored = {k for k in study.user_attrs if k.startswith("structure_config:")}
        # Trials failed as driver_died / interrupted were re-queued: they do not count.
        done = study.get_trials(deepcopy=False, states=_finished_states())
        self.already = sum(counted(t) for t in done)
        self.user_errors_in_a_row = 0
        self.stopping = False
        self.trial_s = {"build": 0.0, "train": 0.0, "eval": 0.0}
        self._last_error = ""
        # Finished trials' results on their way to the study (held while it is unreachable).
        self.outbox = Outbox()

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        started = time.monotonic()
        try:
            while True:
                with contextlib.suppress(*STORAGE_ERRORS):  # the lease waits for the storage
                    self.lease.beat()
                if self.interrupts.cancel_now:
                    break
                self.outbox.flush()
                self._fill()
                commit(self.study)  # the trials just asked reach the disk before the wait
                if not self.inflight and not self.outbox:
                    break
                for event in self.backend.poll(0.5):
                    if isinstance(event, Intermediate):
                        self._intermediate(event)
                    else:
                        self._result(event)
                self.progress.on_tick(self.counts, self.best, time.monotonic() - started)
        except BaseException as exc:
            self._abandon_inflight(exc)
            raise
        if self.interrupts.draining:
            self._abandon_inflight()
            raise KeyboardInterrupt
        if self.stopping and self.counts.complete + self.counts.pruned == 0:
            raise SweepFailed(f"stopped after {self.user_errors_in_a_row} trials failed in a row "
                              f"with user errors; the last: {self._last_error}")

    def _fill(self) -> None:
        # Nothing new while results wait for the storage: the budget counts them once written.
        while (not self.stopping and not self.exhausted and not self.interrupts.draining
               and not self.outbox and self.backend.free_slots() > 0
               and self.already + self.counts.finished + len(self.inflight) < self.budget):
            try:
                self._ask_and_submit()
            except STORAGE_ERRORS:
                # Keep the loop waiting (not ending short of the budget) until the storage
                # answers: the outbox holds a read that succeeds once it is back.
                if not self.outbox:
                    self.outbox.put("the next trial", self._storage_check)
                return

    def _storage_check(self) -> None:
        self.study.user_attrs  # noqa: B018  (a read: raises while the storage is away)

    def _ask_and_submit(self) -> None:
        """Ask for one trial and submit it (or fail it at once: a DriverFailure)."""
        # Define-by-run: parents are sampled before the keys whose `when` reads them.
        trial = self.study.ask()
        try:
            params = self.maker.params(trial)
            # A re-queued trial keeps the seed of the run that was cut short.
            seed = requeued_seed(trial)
            if seed is None:
                seed = derive_seed(self.spec.sweep.seed, "trial", trial.number)
            trial.set_user_attr("seed", seed)
        except STORAGE_ERRORS:
            # Asked but not set up: fail it and re-queue its params once the storage is back.
            self.outbox.put(f"trial {trial.number} (asked)", lambda: fail_and_requeue(
                self.study, trial, "interrupted", "the storage failed while the trial was "
                "being asked; its params were re-queued"))
            raise
        try:
            spec = replace(self.maker.make(trial, params), seed=seed)
        except DriverFailure as failure:
            spec = TrialSpec(trial.number, params, seed)
            self.progress.on_trial_start(spec)
            self._finish(_InFlight(trial, spec, params),
                         TrialResult.failed(spec, failure.reason, failure.message))
            return
        if spec.structure is not None:
            self._record_structure(trial, spec)
        self.inflight[trial.number] = _InFlight(trial, spec, params)
        self.backend.submit(spec)
        self.counts.running = len(self.inflight)
        # Show every active key, the switch.* and model.* ones the worker never sees too.
        self.progress.on_trial_start(replace(spec, params=params, structure_config_json=None))

    def _record_structure(self, trial: optuna.trial.Trial, spec: TrialSpec) -> None:
        """Structural search: the trial's structure hash, and each structure's base config
        once in the study (``structure_config:<hash>``), so the study alone can rebuild it."""
        assert spec.structure is not None and spec.structure_config_json is not None
        trial.set_user_attr("structure", spec.structure)
        attr = f"structure_config:{spec.structure}"
        if attr not in self.structures_stored:
            self.study.set_user_attr(attr, spec.structure_config_json)
            self.structures_stored.add(attr)

    def _intermediate(self, event: Intermediate) -> None:
        entry = self.inflight.get(event.number)
        if entry is None or self.spec.is_multi_objective:
            # Optuna cannot record intermediate values of a multi-objective trial.
            self.backend.answer(event, False)
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a retried trial reports its steps again
                entry.trial.report(event.value, event.step)
                entry.reported.add(event.step)
                prune = entry.trial.should_prune()
        except STORAGE_ERRORS:
            prune = False  # the storage is away: keep training rather than wait
        self.backend.answer(event, prune)

    def _result(self, result: TrialResult) -> None:
        entry = self.inflight[result.number]
        retryable = (result.state is TrialState.FAIL and result.reason is not None
                     and result.reason.retryable)
        if retryable and self.interrupts.draining:  # no retry while draining: next run's
            del self.inflight[result.number]
            self.counts.running = len(self.inflight)
            message = f"{result.reason}: not retried after an interrupt; re-queued"
            self.outbox.put(f"trial {result.number} (interrupted)", lambda: fail_and_requeue(
                self.study, entry.trial, "interrupted", message))
            return
        if retryable and entry.spec.attempt < self.spec.sweep.retries:
            entry.spec = entry.spec.retry()
            self.counts.retried += 1
            self.backend.submit(entry.spec)
            self.progress.on_trial_end(result, self.counts, self.best, True)
            return
        del self.inflight[result.number]
        self.counts.running = len(self.inflight)
        self._finish(entry, result)

    def _finish(self, entry: _InFlight, result: TrialResult) -> None:
        """Tell the study, now or, while the storage is unreachable, once it is back."""
        def tell() -> None:
            self._tell(entry, result)
            self.progress.on_trial_end(result, self.counts, self.best, False)
        self.outbox.put(f"trial {result.number} ({result.state.value})", tell)

    def _tell(self, entry: _InFlight, result: TrialResult) -> None:
        trial = entry.trial
        self._report_missing(entry, result)
        set_user_attrs(trial, _attributes(result))
        values: list[float] | None = None
        if result.state is TrialState.COMPLETE:
            got = objective_values(self.spec, result)
            if isinstance(got, str):
                result = replace(result, state=TrialState.FAIL, reason=FailReason.USER_ERROR,
                                 message=got)
                trial.set_user_attr("fail_reason", FailReason.USER_ERROR.value)
                trial.set_user_attr("message", got)
            else:
                values = got
        feasible = True
        if result.state is not TrialState.FAIL and self.spec.constraints:
            feasible = self._constrain(trial, result)
        if values is not None:
            self._tell_study(trial, values=values)
            self.counts.complete += 1
            if feasible:
                self._update_best(result.number, values[0], entry.params)
            self.user_errors_in_a_row = 0
        elif result.state is TrialState.PRUNED:
            self._tell_study(trial, state=optuna.trial.TrialState.PRUNED)
            self.counts.pruned += 1
            self.user_errors_in_a_row = 0
        else:
            self._tell_study(trial, state=optuna.trial.TrialState.FAIL)
            self.counts.failed += 1
            reason = result.reason.value if result.reason else "unknown"
            self.failures[reason] = self.failures.get(reason, 0) + 1
            if result.reason is FailReason.USER_ERROR:
                self.user_errors_in_a_row += 1
                self._last_error = result.message.splitlines()[0] if result.message else ""
                if self.user_errors_in_a_row >= _USER_ERRORS_BEFORE_ABORT:
                    self.stopping = True
        for phase, seconds in (("build", result.timings.build_s),
                               ("train", result.timings.train_s),
                               ("eval", result.timings.eval_s)):
            self.trial_s[phase] += seconds
        record = _trial_record(replace(entry.spec, params=entry.params), result)
        if values is not None and self.spec.is_multi_objective:
            metrics = [o.metric for o in self.spec.objectives]
            record["values"] = dict(zip(metrics, values, strict=True))
        self.folder.write_trial(result.number, record)

    def _report_missing(self, entry: _InFlight, result: TrialResult) -> None:
        """Record per-epoch values whose report had not reached the driver when the trial's
        result did (reports that do not wait for an answer can arrive after it)."""
        if self.spec.is_multi_objective:
            return
        values = result.history.get(monitored_objective(self.spec).metric, [])
        for step, value in enumerate(values):
            if step not in entry.reported and math.isfinite(value):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    entry.trial.report(value, step)
                entry.reported.add(step)

    def _tell_study(self, trial: optuna.trial.Trial, **kwargs: Any) -> None:
        try:
            self.study.tell(trial, **kwargs)
        except RuntimeError as exc:
            # GridSampler / BruteForceSampler call study.stop() once every point has been
            # visited, which only works inside study.optimize; the trial is recorded already.
            if "Study.stop" not in str(exc):
                raise
            self.exhausted = True

    def _constrain(self, trial: optuna.trial.Trial, result: TrialResult) -> bool:
        """Record the constraint values (Optuna's ``constraints``); True if feasible."""
        violations = constraint_values(self.spec, result)
        trial.set_user_attr("constraints", list(violations.values()))
        if hasattr(trial, "set_constraint"):  # Optuna >= 5; before, constraints_func reads
            for label, value in violations.items():  # the user attribute
                trial.set_constraint(label, value)
        feasible = all(v <= 0.0 for v in violations.values())
        trial.set_user_attr("feasible", feasible)
        return feasible

    def _update_best(self, number: int, value: float, params: dict[str, Any]) -> None:
        """Track the best feasible trial by the first objective (the progress table's)."""
        maximize = self.spec.objective.direction is Direction.MAXIMIZE
        if (self.best is None or (value > self.best.value if maximize
                                  else value < self.best.value)):
            self.best = BestTrial(number, value, dict(params))

    def _abandon_inflight(self, cause: BaseException | None = None) -> None:
        """On an interrupt or a crash of the loop: fail every running trial as
        ``interrupted`` and re-queue its params (same seed) for the next run."""
        for number, entry in list(self.inflight.items()):
            # Storage gone: the next driver finds the trial RUNNING and re-queues it then.
            with contextlib.suppress(Exception):
                fail_and_requeue(self.study, entry.trial, "interrupted",
                                 _abandon_message(cause))
            del self.inflight[number]


def _abandon_message(cause: BaseException | None) -> str:
    """Why a running trial was cut short: the sweep's error (nodes lost, say) or an interrupt."""
    if isinstance(cause, SweepFailed):
        return f"the sweep stopped: {str(cause)[:1000]}; its params were re-queued"
    return "the driver was interrupted; its params were re-queued"


def _attributes(result: TrialResult) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "state": result.state.value,
        "seeds": result.seeds,
        "config_hash": result.config_hash,
        "param_count": result.param_count,
        "node": result.node,
        "worker": result.worker,
        "attempt": result.attempt,
        "build_s": round(result.timings.build_s, 4),
        "train_s": round(result.timings.train_s, 4),
        "eval_s": round(result.timings.eval_s, 4),
        "history": result.history,
        "inference_latency_ms": result.inference_latency_ms,
        "environment": result.environment,
        "data_fingerprint": result.data_fingerprint,
        "resumed_from_epoch": result.resumed_from_epoch,
        "engine": result.engine,
        "engine_fallback": (str(result.engine_fallback)
                            if result.engine_fallback is not None else None),
    }
    if result.reason is not None:
        attrs["fail_reason"] = result.reason.value
    if result.message:
        attrs["message"] = result.message[-2000:]
    return attrs


def _trial_record(spec: TrialSpec, result: TrialResult) -> dict[str, Any]:
    return {
        "number": result.number,
        "params": spec.params,
        "seed": spec.seed,
        "value": result.value,
        **_attributes(result),
        "config": json.loads(result.config_json) if result.config_json else None,
    }


def worker_job(spec: SweepSpec, base_config: dict[str, Any]) -> WorkerJob:
    return WorkerJob(
        base_config_json=json.dumps(base_config),
        imports=spec.model.imports,
        data=spec.data,
        training=spec.training,
        objective=monitored_objective(spec),
        trial_timeout=spec.sweep.trial_timeout,
        cpus=spec.sweep.resources.cpu,
        measure_latency=measures_latency(spec),
        checkpoint_dir=str(spec.sweep.checkpoint_dir / spec.name if spec.sweep.checkpoint_dir
                           else spec.run_folder / "checkpoints"),
        checkpoint_every_s=spec.sweep.checkpoint_every_s,
        retries=spec.sweep.retries,
        # Nothing can prune: a worker need not wait for the driver after each epoch.
        await_pruning=not (spec.is_multi_objective
                           or spec.sweep.pruner.name in ("none", "nop")),
    )


def run_sweep(spec: SweepSpec, base_config: dict[str, Any], backend: Backend,
              progress: Progress | None = None,
              options: RunOptions | None = None) -> SweepOutcome:
    """Run the sweep to its budget of finished trials and return what happened.

    On a study that holds trials this resumes it: trials a dead driver left RUNNING are
    failed (``driver_died``) and their params re-queued with the same seed, and the sampler
    is seeded anew so it does not replay the first run's draws. The budget counts finished
    trials except those failed as ``driver_died`` or ``interrupted`` (see
    :mod:`clonesweep.orchestrator.study.resume`). Only one driver runs a sweep at a time
    (:mod:`clonesweep.orchestrator.study.lease`).

    ``base_config`` is the base model's ``serialize_keras_object`` envelope (see
    :func:`clonesweep.orchestrator.model.base_model_config`). The run folder and the study are
    created only after the sampler and pruner settings have been checked; if the study
    cannot be opened, a run folder this call created is removed again.

    Raises:
        SpecError: Bad sampler or pruner settings (nothing created).
        SweepFailed: The workers cannot start (no Ray, too few resources; nothing created).
        StudyError: The storage cannot be opened (a run folder this call made is removed).
        SweepFailed: Trials kept failing on user errors; nothing completed.
        SweepFailed: Another driver holds the sweep (``options.takeover`` is False).
        KeyboardInterrupt: SIGINT or SIGTERM; running trials finished within
            ``options.grace`` seconds or were failed as ``interrupted`` and re-queued.
    """
    progress = progress or NullProgress()
    options = options or RunOptions()
    started = time.monotonic()
    url = storage_url(spec)
    # Settings errors surface here, before anything is created.
    sampler, pruner = make_sampler(spec), make_pruner(spec)
    queued = warm_start(spec, url)
    interrupts = Interrupts(options.grace)
    lease: Lease | None = None
    # Workers start importing Keras now, while the driver opens the study.
    backend.start(worker_job(spec, base_config), spec.sweep.parallel)
    try:
        # After backend.start: ray.init installs a SIGTERM handler of its own.
        with interrupts:
            study, folder, lease = _open(spec, url, base_config, sampler, pruner,
                                         options.takeover)
            budget = _budget(spec, study, options.add_trials)
            enqueue(study, queued)  # known configurations run before any sampling
            loop = _Loop(spec, study, backend, folder, progress, budget, lease, interrupts)
            progress.on_start(spec, mask_url(url), loop.already)
            loop.run()
            best_model = _save_best_model(backend, folder, loop.best)
    finally:
        backend.shutdown()
        if lease is not None:
            lease.release()
    outcome = SweepOutcome(spec.name, mask_url(url), spec.run_folder, loop.counts,
                           budget, loop.already, loop.best, best_model,
                           time.monotonic() - started, loop.trial_s, loop.failures)
    folder.write_json("summary.json", _summary(outcome))
    progress.on_end(outcome)
    return outcome


def _open(spec: SweepSpec, url: str, base_config: dict[str, Any],
          sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
          takeover: bool) -> tuple[optuna.Study, RunFolder, Lease]:
    """Create the run folder, open the study and take its lease (before writing to it);
    undo the folder if the study fails. Then recover what a dead driver left running."""
    folder = RunFolder(spec.run_folder)
    folder.create(spec.file, base_config)
    try:
        study = open_study(spec, url, sampler, pruner)
        # Resuming with another search space would mix two searches in one study.
        check_resume_compatible(spec, study)
    except BaseException:
        folder.remove_if_new()
        raise
    lease = Lease(study)
    previous = lease.acquire(takeover)
    recover_stale(study, previous)
    reseed_sampler(spec, study)
    study.set_user_attr("fixed_params", fixed_params(spec.parameters))
    # What `clonesweep repro` rebuilds from, kept with the study (not only the run folder).
    study.set_user_attr("base_config_hash", canonical_hash(base_config))
    study.set_user_attr("base_config", json.dumps(base_config, sort_keys=True))
    study.set_user_attr("sweep_seed", spec.sweep.seed)
    return study, folder, lease


def _budget(spec: SweepSpec, study: optuna.Study, add_trials: int) -> int:
    """``sweep.trials``; with ``add_trials``, that many more than the larger of it and the
    budget the last driver ran to. Kept in the study for the next ``--add-trials``."""
    budget = spec.sweep.trials
    if add_trials:
        budget = max(budget, int(study.user_attrs.get(BUDGET_ATTR, 0))) + add_trials
    study.set_user_attr(BUDGET_ATTR, budget)
    return budget


def _save_best_model(backend: Backend, folder: RunFolder, best: BestTrial | None) -> Path | None:
    if best is None:
        return None
    data = backend.fetch_model(best.number)
    return folder.write_bytes("best.keras", data) if data else None


def _summary(outcome: SweepOutcome) -> dict[str, Any]:
    c = outcome.counts
    return {
        "name": outcome.name,
        "storage": outcome.storage,
        "budget": outcome.budget,
        "finished_before": outcome.already_finished,
        "complete": c.complete,
        "pruned": c.pruned,
        "failed": c.failed,
        "retried": c.retried,
        "failures": outcome.failures,
        "best": None if outcome.best is None else {
            "number": outcome.best.number, "value": outcome.best.value,
            "params": outcome.best.params},
        "best_model": str(outcome.best_model) if outcome.best_model else None,
        "wall_s": round(outcome.wall_s, 3),
        # Seconds the trials spent on their workers, summed over trials: compare with wall_s
        # (times the parallelism) to see the orchestration overhead.
        "trial_seconds": {k: round(v, 3) for k, v in outcome.trial_s.items()},
    }
