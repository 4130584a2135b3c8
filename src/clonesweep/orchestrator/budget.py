"""How many finished trials a run aims for, decided once and said in plain words.

The study holds the budget its last run aimed for (the ``budget`` study attribute). A run's
budget is, in order:

* ``--add-trials N``: N more than the larger of the trials the study has finished (those that
  count, see :func:`~clonesweep.orchestrator.study.resume.counted`) and the budget it holds.
  On a finished sweep that is simply N more trials; on one cut short, the rest of its budget
  and N more.
* ``--trials N``: N.
* ``resume``: the budget the study holds (what the interrupted run aimed for).
* a plain ``run``: the sweep file's ``sweep.trials``.

When the study has finished that many already, the run says ``budget met`` and starts
nothing (:func:`peek`, called before any worker starts).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import optuna

from clonesweep.errors import StudyError
from clonesweep.orchestrator.study.resume import BUDGET_ATTR, counted
from clonesweep.orchestrator.study.storage import load_study
from clonesweep.spec.model import SweepSpec

__all__ = ["Budget", "decide", "held", "peek", "with_budget"]


@dataclass(frozen=True)
class Budget:
    """A run's budget.

    Attributes:
        total: Finished trials (that count) the study should hold when the run ends.
        finished: Those it held when the run started.
        why: Where ``total`` comes from, in words.
        held: The budget the study held before this run (None: it held none).
    """

    total: int
    finished: int
    why: str
    held: int | None = None

    @property
    def met(self) -> bool:
        return self.finished >= self.total

    def met_message(self) -> str:
        text = (f"budget met ({self.finished} trials); use --add-trials N to run N more")
        if self.held is not None and self.held > self.total:
            text += (f"; the study holds a budget of {self.held}: `clonesweep resume FILE` "
                     "continues to it")
        return text


def held(study: optuna.Study) -> int | None:
    """The budget the study's last run aimed for (None for a study that holds none)."""
    value = study.user_attrs.get(BUDGET_ATTR)
    return None if value is None else int(value)


def decide(spec: SweepSpec, study: optuna.Study, *, add_trials: int = 0,
           trials: int | None = None, resume: bool = False) -> Budget:
    """The budget of a run on ``study`` (see the module docstring for the order)."""
    finished = sum(counted(t) for t in study.get_trials(deepcopy=False))
    before = held(study)
    if add_trials:
        base = max(finished, before if before is not None else spec.sweep.trials)
        why = (f"{add_trials} more than the {base} "
               + ("trials finished" if base == finished else "trials of the budget held"))
        return Budget(base + add_trials, finished, why, before)
    if trials is not None:
        return Budget(trials, finished, "--trials", before)
    if resume and before is not None:
        return Budget(before, finished, "the budget the study holds", before)
    return Budget(spec.sweep.trials, finished, "sweep.trials", before)


def peek(spec: SweepSpec, url: str, *, add_trials: int = 0, trials: int | None = None,
         resume: bool = False) -> tuple[optuna.Study, Budget] | None:
    """The existing study and the run's budget, read without creating anything (None when
    the study does not exist yet)."""
    if url.startswith("sqlite:///") and not _exists(url[len("sqlite:///"):]):
        return None
    if url.startswith("journal://") and not _exists(url[len("journal://"):]):
        return None
    try:
        study = load_study(spec.name, url)
    except StudyError:
        return None
    return study, decide(spec, study, add_trials=add_trials, trials=trials, resume=resume)


def with_budget(spec: SweepSpec, total: int) -> SweepSpec:
    """``spec`` with ``sweep.trials`` set to the run's budget (what headers show)."""
    return replace(spec, sweep=replace(spec.sweep, trials=total))


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).exists()
