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

from clonesweep.orchestrator.backends.base import Backend
from clonesweep.orchestrator.loop import Loop
from clonesweep.orchestrator.records import summary
from clonesweep.orchestrator.runfolder import RunFolder
from clonesweep.orchestrator.search import measures_latency, monitored_objective, warm_start
from clonesweep.orchestrator.signals import Interrupts
from clonesweep.orchestrator.study.outbox import Outbox
from clonesweep.orchestrator.study.setup import plan_study
from clonesweep.orchestrator.study.storage import mask_url, storage_url
from clonesweep.orchestrator.sweep_policy import BestTrial, Counts, SweepPolicy
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
        add_trials: Extend the budget: the larger of ``sweep.trials`` and the budget the last
            driver ran to, plus this many.
        grace: Seconds running trials may take to finish after Ctrl-C / SIGTERM before they
            are cancelled (and re-queued).
    """

    takeover: bool = False
    add_trials: int = 0
    grace: float = 30.0


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
    plan = plan_study(spec, url, warm_start(spec, url))
    interrupts = Interrupts(options.grace)
    opened = None
    # Workers start importing Keras now, while the driver opens the study.
    backend.start(worker_job(spec, base_config), spec.sweep.parallel)
    try:
        # After backend.start: ray.init installs a SIGTERM handler of its own.
        with interrupts:
            opened = plan.open(base_config, takeover=options.takeover,
                               add_trials=options.add_trials)
            outbox = Outbox()
            policy = SweepPolicy(spec, opened.study, opened.folder, progress, opened.budget,
                                 opened.already, outbox)
            progress.on_start(spec, mask_url(url), opened.already)
            Loop(backend, policy, retries=spec.sweep.retries, outbox=outbox,
                 interrupts=interrupts, lease=opened.lease).run()
            policy.check_not_stopped()
            best_model = _save_best_model(backend, opened.folder, policy.best)
    finally:
        backend.shutdown()
        if opened is not None:
            opened.lease.release()
    outcome = SweepOutcome(spec.name, mask_url(url), spec.run_folder, policy.counts,
                           opened.budget, opened.already, policy.best, best_model,
                           time.monotonic() - started, policy.trial_s, policy.failures)
    opened.folder.write_json("summary.json", summary(outcome))
    progress.on_end(outcome)
    return outcome


def _save_best_model(backend: Backend, folder: RunFolder, best: BestTrial | None) -> Path | None:
    if best is None:
        return None
    data = backend.fetch_model(best.number)
    return folder.write_bytes("best.keras", data) if data else None
