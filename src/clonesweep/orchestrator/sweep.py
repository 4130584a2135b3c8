"""Running a sweep, and what it returns.

:func:`run_sweep` plans the study (nothing created), starts the workers, opens the study
(:mod:`clonesweep.orchestrator.study.setup`) and runs the one loop
(:mod:`clonesweep.orchestrator.loop`) with the sweep's policy
(:mod:`clonesweep.orchestrator.sweep_policy`: ask Optuna for trials up to the budget, prune
through intermediate values, tell each result with the attributes of
:mod:`clonesweep.orchestrator.records`, stop after repeated user errors).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from clonesweep.orchestrator import bestmodel
from clonesweep.orchestrator.backends.base import Backend
from clonesweep.orchestrator.budget import Budget, with_budget
from clonesweep.orchestrator.budget import peek as budget_peek
from clonesweep.orchestrator.gridplan import GridPlan
from clonesweep.orchestrator.loop import Loop
from clonesweep.orchestrator.packing import packing
from clonesweep.orchestrator.records import summary
from clonesweep.orchestrator.search import (
    best_so_far,
    measures_latency,
    monitored_objective,
    warm_start,
)
from clonesweep.orchestrator.signals import Interrupts
from clonesweep.orchestrator.study.outbox import Outbox
from clonesweep.orchestrator.study.setup import plan_study
from clonesweep.orchestrator.study.storage import mask_url, storage_url
from clonesweep.orchestrator.sweep_policy import BestTrial, Counts, SweepPolicy
from clonesweep.orchestrator.trackers import Trackers
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import TrialResult, TrialSpec
from clonesweep.workers.runner import WorkerJob

__all__ = ["BestTrial", "Counts", "NullProgress", "Progress", "RunOptions", "SweepOutcome",
           "run_sweep", "worker_job"]


@dataclass(frozen=True)
class RunOptions:
    """How a driver runs a sweep, beyond the sweep file.

    Attributes:
        takeover: Take the sweep over even if another driver's lease is fresh.
        add_trials: Run this many more than the larger of the trials the study has finished
            and the budget it holds (:mod:`clonesweep.orchestrator.budget`).
        grace: Seconds running trials may take to finish after Ctrl-C / SIGTERM before they
            are cancelled (and re-queued).
        trials: ``--trials``: the budget, over ``sweep.trials`` and the study's.
        resume: Continue to the budget the study holds (``clonesweep resume``).
    """

    takeover: bool = False
    add_trials: int = 0
    grace: float = 30.0
    trials: int | None = None
    resume: bool = False


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
    #: Why the sweep ended short of its budget, in words ("" when it met it).
    note: str = ""
    #: Several objectives: each Pareto-front trial's model file (see bestmodel.py).
    front_models: dict[int, Path] = field(default_factory=dict)
    #: How to get the answer's model when no worker kept it ("" when it was kept).
    model_hint: str = ""


class Progress(Protocol):
    """Receives the sweep's events, in the driver's thread. Must not raise."""

    def on_start(self, spec: SweepSpec, storage: str, already_finished: int) -> None: ...

    def on_trial_start(self, spec: TrialSpec) -> None: ...

    def on_epoch(self, number: int, epoch: int, value: float) -> None:
        """Trial ``number`` finished ``epoch`` (0-based) with ``value`` of the monitored
        objective; called as each report reaches the driver, before any pruning decision."""

    def on_trial_end(self, result: TrialResult, counts: Counts, best: BestTrial | None,
                     retried: bool) -> None: ...

    def on_tick(self, counts: Counts, best: BestTrial | None, elapsed: float) -> None: ...

    def on_end(self, outcome: SweepOutcome) -> None: ...


class NullProgress:
    def on_start(self, spec: SweepSpec, storage: str, already_finished: int) -> None: ...
    def on_trial_start(self, spec: TrialSpec) -> None: ...
    def on_epoch(self, number: int, epoch: int, value: float) -> None: ...
    def on_trial_end(self, result: TrialResult, counts: Counts, best: BestTrial | None,
                     retried: bool) -> None: ...
    def on_tick(self, counts: Counts, best: BestTrial | None, elapsed: float) -> None: ...
    def on_end(self, outcome: SweepOutcome) -> None: ...


def worker_job(spec: SweepSpec, base_config: dict[str, Any]) -> WorkerJob:
    """What every worker of the sweep holds: the base config, data, training, objective."""
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
        # Workers keep what may be the study's answer (bestmodel.py, workers/keeper.py).
        keep_objectives=spec.objectives,
        keep_constraints=spec.constraints,
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
        SweepFailed: Trials kept failing on user errors with nothing completed, or the last
            few finished trials failed with the same message
            (:mod:`~clonesweep.orchestrator.failstreak`; the best model is kept first).
        SweepFailed: Another driver holds the sweep (``options.takeover`` is False).
        KeyboardInterrupt: SIGINT or SIGTERM; running trials finished within
            ``options.grace`` seconds or were failed as ``interrupted`` and re-queued.
    """
    progress = progress or NullProgress()
    options = options or RunOptions()
    started = time.monotonic()
    url = storage_url(spec)
    # Settings errors surface here, before anything is created.
    plan = plan_study(spec, url, warm_start(spec, url))
    # A sweep that has met its budget or run its whole grid says so and starts nothing.
    peeked = budget_peek(spec, url, add_trials=options.add_trials, trials=options.trials,
                         resume=options.resume)
    if peeked is not None:
        held_study, held_budget = peeked
        grid = GridPlan.of(spec)
        if held_budget.met:
            return _nothing_to_run(spec, url, held_study, held_budget, held_budget.met_message(),
                                   progress, started)
        if grid is not None and grid.left(held_study) == 0:
            return _nothing_to_run(spec, url, held_study, held_budget, grid.note(), progress,
                                   started)
    # A tracker whose library is missing is refused here, before anything exists.
    trackers = Trackers.of(spec)
    interrupts = Interrupts(options.grace)
    opened = None
    # Workers start importing Keras now, while the driver opens the study.
    backend.start(worker_job(spec, base_config), spec.sweep.parallel)
    try:
        # After backend.start: ray.init installs a SIGTERM handler of its own.
        with interrupts:
            opened = plan.open(base_config, takeover=options.takeover,
                               add_trials=options.add_trials, trials=options.trials,
                               resume=options.resume)
            outbox = Outbox()
            policy = SweepPolicy(spec, opened.study, opened.folder, progress, opened.budget,
                                 opened.already, outbox, trackers)
            # The header shows the budget this run aims for, not the file's figure.
            progress.on_start(with_budget(spec, opened.budget), mask_url(url), opened.already)
            Loop(backend, packing(policy, spec, base_config, backend),
                 retries=spec.sweep.retries, outbox=outbox,
                 interrupts=interrupts, lease=opened.lease).run()
            kept = bestmodel.keep(backend, opened.folder, opened.study)
            # After keeping: a sweep stopped on a repeating failure keeps its best model.
            policy.check_not_stopped()
    finally:
        backend.shutdown()
        if trackers is not None:
            trackers.close()
        if opened is not None:
            opened.lease.release()
    outcome = SweepOutcome(spec.name, mask_url(url), spec.run_folder, policy.counts,
                           opened.budget, opened.already, policy.best, kept.best_model,
                           time.monotonic() - started, policy.trial_s, policy.failures,
                           policy.note(), kept.front_models, kept.hint(spec.file) or "")
    opened.folder.write_json("summary.json", summary(outcome))
    progress.on_end(outcome)
    return outcome


def _nothing_to_run(spec: SweepSpec, url: str, study: Any, budget: Budget, note: str,
                    progress: Progress, started: float) -> SweepOutcome:
    """The outcome of a run with nothing to run (its budget met, its grid exhausted): the
    best so far, and ``note`` saying why. Nothing is started or written."""
    found = best_so_far(study, spec)
    best = BestTrial(*found) if found else None
    kept = bestmodel.on_disk(spec, study)
    outcome = SweepOutcome(spec.name, mask_url(url), spec.run_folder, Counts(), budget.total,
                           budget.finished, best, kept.best_model, time.monotonic() - started,
                           {"build": 0.0, "train": 0.0, "eval": 0.0},
                           note=note, front_models=kept.front_models,
                           model_hint=kept.hint(spec.file) or "")
    progress.on_end(outcome)
    return outcome
