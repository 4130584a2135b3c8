"""Whether a sweep file can resume its existing study: the same search space.

A study's trials record the Optuna distribution each param was sampled from. Resuming with a
changed range, a removed key or a new unconditional key would mix draws from two different
spaces in one study (TPE would read the old trials as samples of the new space), so
``validate``, ``run`` and ``resume`` refuse it before asking for a trial.
"""

from __future__ import annotations

from typing import Any

import optuna

from clonesweep.errors import SpecError
from clonesweep.orchestrator.study.plugins import distributions
from clonesweep.spec.model import SweepSpec

__all__ = ["check_resume_compatible"]


def check_resume_compatible(spec: SweepSpec, study: Any) -> None:
    """Refuse to resume ``study`` with a search space other than the one it was sampled from.

    Each trial's recorded Optuna distributions are compared with the sweep's: a key the
    sweep no longer has, a key whose distribution (bounds, log, step, choices) changed, or
    an unconditional key that none of the study's finished trials sampled.
    ``clonesweep run`` / ``resume`` call it right after opening the study.

    Raises:
        SpecError: Naming ``parameters.<key>``, the sweep's entry and the study's.
    """
    wanted = distributions(spec.parameters)
    hint = ("give the sweep another name (a new study), or restore the search space the "
            "study was run with")
    sampled: set[str] = set()
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    for trial in study.get_trials(deepcopy=False):
        for key, dist in trial.distributions.items():
            sampled.add(key)
            if key not in wanted:
                raise SpecError(f"the search space changed: the study's trial {trial.number} "
                                f"sampled '{key}', which the sweep file no longer has",
                                file=str(spec.file), field=f"parameters.{key}",
                                value=_describe(dist), hint=hint)
            if wanted[key] != dist:
                raise SpecError(f"the search space changed: the study's trials sampled '{key}' "
                                f"from {_describe(dist)}", file=str(spec.file),
                                field=f"parameters.{key}", value=_describe(wanted[key]),
                                hint=hint)
    complete = [t for t in finished if t.state is optuna.trial.TrialState.COMPLETE]
    for p in spec.parameters:
        if complete and p.path in wanted and not p.is_conditional and p.path not in sampled:
            raise SpecError(f"the search space changed: '{p.path}' is new; none of the "
                            f"study's {len(complete)} complete trials sampled it",
                            file=str(spec.file), field=f"parameters.{p.path}",
                            value=_describe(wanted[p.path]), hint=hint)


def _describe(dist: Any) -> str:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return f"choices {list(dist.choices)!r}"
    return (f"{type(dist).__name__}(low={dist.low!r}, high={dist.high!r}, log={dist.log}, "
            f"step={dist.step!r})")
