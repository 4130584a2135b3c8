"""A sweep's study set-up, in one place and in order.

Two steps, so that the workers can start importing Keras in between:

1. :func:`plan_study` creates nothing. It counts the trials the study holds already (a read:
   nothing is opened that does not exist), builds the pruner and, once, the sampler (seeded
   anew on a resumed study from that count, see
   :func:`~clonesweep.orchestrator.study.plugins.make_sampler`). Bad settings fail here.
2. :meth:`StudyPlan.open` creates the run folder and opens (or creates) the study, checks a
   resumed study's search space, takes the driver's lease, fails and re-queues what a dead
   driver left RUNNING, writes the study attributes ``repro`` rebuilds from, fixes the budget,
   enqueues the warm-start configurations and counts the finished trials that count.

A trial's seed is derived once, when it is asked (:func:`trial_seed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from clonesweep.errors import SpecError
from clonesweep.orchestrator.budget import decide as decide_budget
from clonesweep.orchestrator.records import SEED, study_attributes
from clonesweep.orchestrator.runfolder import RunFolder
from clonesweep.orchestrator.search import enqueue
from clonesweep.orchestrator.study.check import server_has_study, sqlite_has_study
from clonesweep.orchestrator.study.compat import check_resume_compatible
from clonesweep.orchestrator.study.lease import Lease
from clonesweep.orchestrator.study.plugins import fixed_params, make_pruner, make_sampler
from clonesweep.orchestrator.study.resume import (
    BUDGET_ATTR,
    counted,
    recover_stale,
    requeued_seed,
)
from clonesweep.orchestrator.study.storage import load_study, open_study
from clonesweep.spec.model import SweepSpec
from clonesweep.workers.seeding import derive_seed

__all__ = ["OpenStudy", "StudyPlan", "plan_study", "trial_seed"]


@dataclass(frozen=True)
class OpenStudy:
    """A sweep's study, ready for the loop: held under this driver's lease."""

    study: optuna.Study
    folder: RunFolder
    lease: Lease
    budget: int
    already: int  # finished trials that count against the budget


@dataclass(frozen=True)
class StudyPlan:
    """What :func:`plan_study` settled before anything exists."""

    spec: SweepSpec
    url: str
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner
    queued: list[tuple[dict[str, Any], str]]

    def open(self, base_config: dict[str, Any], *, takeover: bool = False,
             add_trials: int = 0, trials: int | None = None,
             resume: bool = False) -> OpenStudy:
        """Create the run folder, open the study and take its lease (before writing to it);
        undo a folder this call made if the study fails. Then recover what a dead driver
        left running.

        Raises:
            StudyError: The storage cannot be opened, or its study has other directions.
            SpecError: The study was sampled from another search space.
            SweepFailed: Another driver holds the sweep and ``takeover`` is False.
        """
        spec = self.spec
        folder = RunFolder(spec.run_folder)
        folder.create(spec.file, base_config)
        try:
            study = open_study(spec, self.url, self.sampler, self.pruner)
            # Resuming with another search space would mix two searches in one study.
            check_resume_compatible(spec, study)
        except BaseException:
            folder.remove_if_new()
            raise
        lease = Lease(study, self.url)
        recover_stale(study, lease.acquire(takeover))
        for key, value in study_attributes(spec, base_config,
                                           fixed_params(spec.parameters)).items():
            study.set_user_attr(key, value)
        budget = decide_budget(spec, study, add_trials=add_trials, trials=trials,
                               resume=resume).total
        study.set_user_attr(BUDGET_ATTR, budget)  # the next resume's budget
        enqueue(study, self.queued)  # known configurations run before any sampling
        finished = study.get_trials(deepcopy=False, states=(
            optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.FAIL))
        # Trials failed as driver_died / interrupted were re-queued: they do not count.
        already = sum(counted(t) for t in finished)
        return OpenStudy(study, folder, lease, budget, already)


def plan_study(spec: SweepSpec, url: str,
               queued: list[tuple[dict[str, Any], str]]) -> StudyPlan:
    """Step 1: settle the sampler (built once) and the pruner; creates nothing.

    Raises:
        SpecError: Bad sampler or pruner settings.
    """
    return StudyPlan(spec, url, make_sampler(spec, resume_at=trials_held(spec, url)),
                     make_pruner(spec), queued)


def trials_held(spec: SweepSpec, url: str) -> int:
    """How many trials the sweep's study holds; 0 when it does not exist or cannot be read
    (opening it then names the problem). Reads only: creates no file, table or study."""
    try:
        if url.startswith(("sqlite:///", "journal://")):
            path = Path(url.split("://", 1)[1][1 if url.startswith("sqlite") else 0:])
            if str(path) == ":memory:" or not path.exists():
                return 0
            if url.startswith("sqlite") and not sqlite_has_study(path, spec.name):
                return 0
        elif not server_has_study(url, spec.name, _unreadable):
            return 0
        return len(load_study(spec.name, url).get_trials(deepcopy=False))
    except Exception:
        return 0


def _unreadable(problem: str, hint: str) -> SpecError:
    return SpecError(problem, hint=hint)


def trial_seed(spec: SweepSpec, trial: optuna.trial.Trial) -> int:
    """The trial's root seed, derived once when it is asked and stored on it: a re-queued
    trial keeps the seed of the run that was cut short, any other one gets
    ``derive_seed(sweep.seed, "trial", number)``."""
    seed = requeued_seed(trial)
    if seed is None:
        seed = derive_seed(spec.sweep.seed, "trial", trial.number)
    trial.set_user_attr(SEED, seed)
    return seed
