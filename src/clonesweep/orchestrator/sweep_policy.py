"""A sweep's policy for the one loop (:mod:`clonesweep.orchestrator.loop`).

What to ask: Optuna trials, define-by-run, until the finished trials that count plus the
running ones reach the budget, the sampler has visited every point of a grid, or the sweep
stops after ``_USER_ERRORS_BEFORE_ABORT`` user errors in a row (nothing completed) or
failures that repeat with the same message (:mod:`~clonesweep.orchestrator.failstreak`).
What an epoch's value
decides: Optuna's pruner. How a result is told: the objective values (or a user error when
one is missing), the constraints, the attributes and the run folder's record
(:mod:`clonesweep.orchestrator.records`). What a cut-short trial becomes: failed as
``interrupted`` and its params re-queued with the same seed.

About 330 lines, past the usual 300: one policy's hooks (ask, tell, prune, stop) share the
sweep's counters (budget, failures, the repeated-failure streak, timings); split, the
counters would be passed around instead of read in one place.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import optuna

from clonesweep.errors import SweepFailed
from clonesweep.orchestrator import trialrecord
from clonesweep.orchestrator._optuna import stopped_outside_optimize
from clonesweep.orchestrator.failstreak import FailureStreak
from clonesweep.orchestrator.gridplan import GridPlan
from clonesweep.orchestrator.loop import AskedFailed, Work
from clonesweep.orchestrator.records import failure_attributes, trial_attributes, trial_record
from clonesweep.orchestrator.runfolder import RunFolder
from clonesweep.orchestrator.search import (
    DriverFailure,
    TrialMaker,
    best_so_far,
    constraint_values,
    monitored_objective,
    objective_values,
)
from clonesweep.orchestrator.study.outbox import STORAGE_ERRORS, Outbox
from clonesweep.orchestrator.study.resume import fail_and_requeue
from clonesweep.orchestrator.study.setup import trial_seed
from clonesweep.orchestrator.study.storage import commit, set_user_attrs
from clonesweep.spec.model import Direction, SweepSpec
from clonesweep.trials import FailReason, Intermediate, TrialResult, TrialSpec, TrialState

if TYPE_CHECKING:
    from clonesweep.orchestrator.sweep import Progress
    from clonesweep.orchestrator.trackers import Trackers

__all__ = ["BestTrial", "Counts", "SweepPolicy"]

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
class BestTrial:
    number: int
    value: float
    params: dict[str, Any]


@dataclass
class _Asked:
    """The study's side of one trial, from ask to tell."""

    trial: optuna.trial.Trial
    params: dict[str, Any]  # every active key, switch.* and model.* included
    reported: set[int] = field(default_factory=set)  # epochs recorded as intermediate values


class SweepPolicy:
    """Asks, prunes and tells for one sweep; the loop runs it (see the module docstring)."""

    def __init__(self, spec: SweepSpec, study: optuna.Study, folder: RunFolder,
                 progress: Progress, budget: int, already: int, outbox: Outbox,
                 trackers: Trackers | None = None) -> None:
        self.spec, self.study, self.folder, self.progress = spec, study, folder, progress
        self.trackers = trackers  # MLflow / W&B, told after the study (trackers.py)
        self.budget, self.already, self.outbox = budget, already, outbox
        self.maker = TrialMaker(spec)
        self.asked: dict[int, _Asked] = {}
        self.counts = Counts()
        self.failures: dict[str, int] = {}
        found = best_so_far(study, spec)
        self.best = BestTrial(*found) if found else None
        # A grid or brute-force sampler that has visited every point ends the sweep early.
        self.exhausted = False
        # Grid / brute force: the driver hands out each point once (gridplan.py).
        self.grid = GridPlan.of(spec)
        self.structures_stored = {k for k in study.user_attrs if k.startswith("structure_config:")}
        self.user_errors_in_a_row = 0
        self.streak = FailureStreak()  # the same failure again and again: stop
        self.stopping = False
        self.trial_s = {"build": 0.0, "train": 0.0, "eval": 0.0}
        self._last_error = ""
        self._started = time.monotonic()

    def note(self) -> str:
        """Why the sweep ended short of its budget, in words ("" when it did not)."""
        if self.exhausted and self.grid is not None:
            return self.grid.note()
        return ""

    def check_not_stopped(self) -> None:
        """Raises SweepFailed when the sweep stopped on a failure that repeated, or on user
        errors with nothing finished."""
        if self.streak.stopped:
            raise SweepFailed(self.streak.message())
        if self.stopping and self.counts.complete + self.counts.pruned == 0:
            raise SweepFailed(f"stopped after {self.user_errors_in_a_row} trials failed in a row "
                              f"with user errors; the last: {self._last_error}")

    # -- asking ------------------------------------------------------------------------------
    def ask(self, running: int) -> Work | AskedFailed | None:
        if (self.stopping or self.exhausted
                or self.already + self.counts.finished + running >= self.budget):
            return None
        if self.grid is not None and not self.grid.prepare(self.study):
            self.exhausted = True  # every point finished or in flight: ask nothing more
            return None
        # Define-by-run: parents are sampled before the keys whose `when` reads them.
        trial = self.study.ask()
        try:
            params = self.maker.params(trial)
            seed = trial_seed(self.spec, trial)
            trialrecord.store(trial, params)  # what it trains, otherwise values included
        except STORAGE_ERRORS:
            # Asked but not set up: fail it and re-queue its params once the storage is back.
            self.outbox.put(f"trial {trial.number} (asked)", lambda: fail_and_requeue(
                self.study, trial, FailReason.INTERRUPTED, "the storage failed while the "
                "trial was being asked; its params were re-queued"))
            raise
        self.asked[trial.number] = _Asked(trial, params)
        try:
            spec = self.maker.make(trial.number, params, seed)
        except DriverFailure as failure:
            spec = TrialSpec(trial.number, params, seed)
            self.progress.on_trial_start(spec)
            return AskedFailed(spec, TrialResult.failed(spec, failure.reason, failure.message))
        if spec.structure is not None:
            self._record_structure(trial, spec)
        self.counts.running = running + 1
        # Show every active key, the switch.* and model.* ones the worker never sees too.
        self.progress.on_trial_start(replace(spec, params=params, structure_config_json=None))
        return spec

    def _record_structure(self, trial: optuna.trial.Trial, spec: TrialSpec) -> None:
        """Structural search: the trial's structure hash, and each structure's base config
        once in the study (``structure_config:<hash>``), so the study alone can rebuild it."""
        assert spec.structure is not None and spec.structure_config_json is not None
        trial.set_user_attr("structure", spec.structure)
        attr = f"structure_config:{spec.structure}"
        if attr not in self.structures_stored:
            self.study.set_user_attr(attr, spec.structure_config_json)
            self.structures_stored.add(attr)

    def after_fill(self) -> None:
        commit(self.study)  # the trials just asked reach the disk before the wait

    def storage_check(self) -> None:
        self.study.user_attrs  # noqa: B018  (a read: raises while the storage is away)

    # -- while it runs -----------------------------------------------------------------------
    def report(self, event: Intermediate) -> bool:
        entry = self.asked.get(event.number)
        if entry is not None:  # the live view's epoch column, the JSON lines' epoch events
            self.progress.on_epoch(event.number, event.step, event.value)
        if entry is None or self.spec.is_multi_objective:
            return False  # Optuna cannot record intermediate values of a multi-objective trial
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a retried trial reports its steps again
                entry.trial.report(event.value, event.step)
                entry.reported.add(event.step)
                return entry.trial.should_prune()
        except STORAGE_ERRORS:
            return False  # the storage is away: keep training rather than wait

    def retried(self, again: Work, result: TrialResult) -> None:
        self.counts.retried += 1
        self.progress.on_trial_end(result, self.counts, self.best, True)

    def tick(self, running: int) -> None:
        self.counts.running = running
        self.progress.on_tick(self.counts, self.best, time.monotonic() - self._started)

    # -- how it ends -------------------------------------------------------------------------
    def tell(self, work: Work, result: TrialResult) -> None:
        assert isinstance(work, TrialSpec)
        entry = self.asked[work.number]
        values = self._tell(entry, result)
        record = trial_record(replace(work, params=entry.params), result, values)
        self.folder.write_trial(result.number, record)
        del self.asked[work.number]
        self.progress.on_trial_end(result, self.counts, self.best, False)

    def _tell(self, entry: _Asked, result: TrialResult) -> dict[str, float] | None:
        """Record the result in the study and the counts; the multi-objective values by
        metric, for the run folder's record."""
        trial = entry.trial
        self._report_missing(entry, result)
        set_user_attrs(trial, trial_attributes(result))
        values: list[float] | None = None
        if result.state is TrialState.COMPLETE:
            got = objective_values(self.spec, result)
            if isinstance(got, str):
                result = replace(result, state=TrialState.FAIL, reason=FailReason.USER_ERROR,
                                 message=got)
                set_user_attrs(trial, failure_attributes(FailReason.USER_ERROR, got))
            else:
                values = got
        feasible = True
        if result.state is not TrialState.FAIL and self.spec.constraints:
            feasible = self._constrain(trial, result)
        if values is not None:
            frozen = self._tell_study(trial, values=values)
            self.counts.complete += 1
            if feasible:
                self._update_best(result.number, values[0], entry.params)
            self.user_errors_in_a_row = 0
        elif result.state is TrialState.PRUNED:
            frozen = self._tell_study(trial, state=optuna.trial.TrialState.PRUNED)
            self.counts.pruned += 1
            self.user_errors_in_a_row = 0
        else:
            frozen = self._tell_study(trial, state=optuna.trial.TrialState.FAIL)
            self._failed(result)
        if self.trackers is not None:  # after the study: they never hold up its record
            self.trackers.told(self.study, frozen, result)
        if self.streak.see(result):
            self.stopping = True
        for phase, seconds in (("build", result.timings.build_s),
                               ("train", result.timings.train_s),
                               ("eval", result.timings.eval_s)):
            self.trial_s[phase] += seconds
        if values is None or not self.spec.is_multi_objective:
            return None
        return dict(zip([o.metric for o in self.spec.objectives], values, strict=True))

    def _failed(self, result: TrialResult) -> None:
        self.counts.failed += 1
        reason = result.reason.value if result.reason else "unknown"
        self.failures[reason] = self.failures.get(reason, 0) + 1
        if result.reason is FailReason.USER_ERROR:
            self.user_errors_in_a_row += 1
            self._last_error = result.message.splitlines()[0] if result.message else ""
            # Only with nothing completed: otherwise the sweep stopped short of its budget
            # without an error (the repeats of one message stop it through the streak).
            if (self.user_errors_in_a_row >= _USER_ERRORS_BEFORE_ABORT
                    and self.counts.complete + self.counts.pruned == 0):
                self.stopping = True

    def _report_missing(self, entry: _Asked, result: TrialResult) -> None:
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

    def _tell_study(self, trial: optuna.trial.Trial,
                    **kwargs: Any) -> optuna.trial.FrozenTrial:
        """``study.tell``; the trial as recorded."""
        try:
            return self.study.tell(trial, **kwargs)
        except RuntimeError as exc:
            # GridSampler / BruteForceSampler call study.stop() once every point has been
            # visited, which only works inside study.optimize; the trial is recorded already.
            if not stopped_outside_optimize(exc):
                raise
            self.exhausted = True
            return next(t for t in self.study.get_trials(deepcopy=False)
                        if t.number == trial.number)

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

    def requeue(self, work: Work, result: TrialResult) -> None:
        entry = self.asked[work.number]
        reason = result.reason.value if result.reason else "failed"
        fail_and_requeue(self.study, entry.trial, FailReason.INTERRUPTED,
                         f"{reason}: not retried after an interrupt; re-queued")
        del self.asked[work.number]

    def abandon(self, running: list[Work], cause: BaseException | None) -> None:
        """Fail every running trial as ``interrupted`` and re-queue its params (same seed)."""
        message = (f"the sweep stopped: {str(cause)[:1000]}; its params were re-queued"
                   if isinstance(cause, SweepFailed)
                   else "the driver was interrupted; its params were re-queued")
        for work in running:
            entry = self.asked.pop(work.number, None)
            # Storage gone: the next driver finds the trial RUNNING and re-queues it then.
            with contextlib.suppress(Exception):
                if entry is not None:
                    fail_and_requeue(self.study, entry.trial, FailReason.INTERRUPTED, message)
