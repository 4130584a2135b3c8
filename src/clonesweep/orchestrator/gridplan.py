"""Grid and brute-force sweeps: each point of the space runs once, at any parallelism.

Optuna's ``GridSampler`` picks a grid point when a trial is asked. With trials in flight it
may pick one that is still running (6 points gave 7 trials at 2 parallel), and a grid over
conditional keys holds many grid ids that train the same configuration (the keys whose
``when`` fails are never suggested). ``BruteForceSampler`` walks the conditional tree, but
once every point left is running it also repeats one.

So the driver owns the plan: :class:`GridPlan` enumerates the distinct points of the space
(conditions honoured: a point holds the sampled keys that are active), and before each ask
:meth:`GridPlan.prepare` enqueues the next point no trial holds, finished, running or
waiting. With none left it says so, the driver asks nothing more, and the sweep ends when
the trials in flight finish. The sampler still runs each trial (it sees enqueued values).
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Any

import optuna

from clonesweep.spec.model import Distribution, ParamSpec, SweepSpec

__all__ = ["GridPlan"]

_SAMPLERS = ("grid", "bruteforce")

_Key = tuple[tuple[str, str, Any], ...]


def _values(p: ParamSpec) -> list[Any]:
    """The finite values of a sampled key (the loader refused grids over continuous ones)."""
    if p.distribution is Distribution.CATEGORICAL:
        return list(p.values)
    assert p.low is not None and p.high is not None
    if p.distribution is Distribution.INT_UNIFORM:
        return list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
    assert p.step is not None
    return [p.low + i * p.step for i in range(round((p.high - p.low) / p.step) + 1)]


def _key(params: dict[str, Any]) -> _Key:
    """A point's identity: floats to 9 decimals (a grid value recomputed from its step may
    differ in the last bit), bools apart from ints."""
    def norm(value: Any) -> tuple[str, Any]:
        if isinstance(value, float):
            return "f", round(value, 9)
        return type(value).__name__, value
    return tuple(sorted((k, *norm(v)) for k, v in params.items()))


def _points(parameters: tuple[ParamSpec, ...]) -> list[dict[str, Any]]:
    """Every distinct assignment of the active sampled keys (parents-first order)."""
    out: list[dict[str, Any]] = []

    def walk(i: int, chosen: dict[str, Any], point: dict[str, Any]) -> None:
        if i == len(parameters):
            out.append(point)
            return
        p = parameters[i]
        if not p.active(chosen):
            walk(i + 1, chosen, point)
        elif p.is_fixed:
            walk(i + 1, {**chosen, p.path: p.values[0]}, point)
        else:
            for value in _values(p):
                walk(i + 1, {**chosen, p.path: value}, {**point, p.path: value})

    walk(0, {}, {})
    return out


@dataclass(frozen=True)
class GridPlan:
    """The points of a grid or brute-force sweep, in the order they are run."""

    points: tuple[dict[str, Any], ...]

    @classmethod
    def of(cls, spec: SweepSpec) -> GridPlan | None:
        """The plan of ``spec``'s space if its sampler is ``grid`` or ``bruteforce``."""
        if spec.sweep.sampler.name not in _SAMPLERS:
            return None
        points = _points(spec.parameters)
        # Like Optuna's grid: a shuffled order (seeded), so a sweep cut short has sampled
        # the space evenly rather than its first corner.
        random.Random(spec.sweep.seed).shuffle(points)
        return cls(tuple(points))

    def prepare(self, study: optuna.Study) -> bool:
        """Make sure the next ``study.ask()`` gets a point no trial holds: a waiting trial is
        asked first; else the next free point is enqueued. False: every point is taken."""
        trials = study.get_trials(deepcopy=False)
        if any(t.state is optuna.trial.TrialState.WAITING for t in trials):
            return True
        taken = {_key(t.params) for t in trials}
        for point in self.points:
            if _key(point) not in taken:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # enqueue_trial: experimental in some
                    study.enqueue_trial(point, user_attrs={"grid_point": True})
                return True
        return False

    def left(self, study: optuna.Study) -> int:
        """Trials still to run: the points no trial holds, and the waiting trials (a read)."""
        trials = study.get_trials(deepcopy=False)
        waiting = sum(t.state is optuna.trial.TrialState.WAITING for t in trials)
        taken = {_key(t.params) for t in trials}
        return sum(_key(p) not in taken for p in self.points) + waiting

    def note(self) -> str:
        return (f"grid exhausted: each of its {len(self.points)} points has run once; "
                "the sweep ends here")
