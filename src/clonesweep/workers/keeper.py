"""Which trained models a worker keeps for the driver: its own front of feasible trials.

The driver saves the study's answer, the best feasible trial (or, with several objectives,
every trial of the Pareto front), from the worker that trained it. A worker cannot know the
study's answer, but it can keep every trial that could be part of it: among its own trials,
those that meet every constraint and that no other of its trials dominates. The study's
front is a subset of the union of the workers' fronts, so the driver always finds its
trials' models; a worker keeps one model per objective value tie (usually one) with a single
objective, and its own front, which is small, with several.

Objective and constraint values are read from the :class:`~clonesweep.trials.TrialResult`
exactly as the driver reads them (the last epoch's value of a logged metric,
``param_count``, ``inference_latency_ms``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from clonesweep.spec.model import ConstraintSpec, Direction, ObjectiveSpec
from clonesweep.trials import TrialResult

__all__ = ["ModelKeeper", "metric_value"]


def metric_value(result: TrialResult, metric: str) -> float | None:
    """The value of ``metric`` for a finished trial (None when it has none)."""
    if metric == "param_count":
        return float(result.param_count) if result.param_count else None
    if metric == "inference_latency_ms":
        return result.inference_latency_ms
    history = result.history.get(metric)
    return float(history[-1]) if history else None


@dataclass
class ModelKeeper:
    """Keeps the ``.keras`` bytes of the worker's non-dominated feasible trials."""

    objectives: tuple[ObjectiveSpec, ...]
    constraints: tuple[ConstraintSpec, ...] = ()
    kept: dict[int, tuple[tuple[float, ...], bytes]] = field(default_factory=dict)

    def _score(self, result: TrialResult) -> tuple[float, ...] | None:
        """Objective values turned so that larger is better; None: infeasible or missing."""
        for c in self.constraints:
            value = metric_value(result, c.metric)
            if value is None or c.violation(value) > 0.0:
                return None
        scores = []
        for o in self.objectives:
            value = metric_value(result, o.metric)
            if value is None or not math.isfinite(value):
                return None
            scores.append(value if o.direction is Direction.MAXIMIZE else -value)
        return tuple(scores)

    def offer(self, number: int, result: TrialResult, save: Callable[[], bytes]) -> bool:
        """Keep trial ``number``'s model (``save()`` serializes it) if it may be the study's
        answer; drop those it dominates. Returns whether it was kept."""
        score = self._score(result)
        if score is None or any(_dominates(s, score) for s, _ in self.kept.values()):
            return False
        self.kept = {n: kept for n, kept in self.kept.items() if not _dominates(score, kept[0])}
        self.kept[number] = (score, save())
        return True

    def get(self, number: int) -> bytes | None:
        found = self.kept.get(number)
        return None if found is None else found[1]


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is no worse than ``b`` everywhere and better somewhere (larger is better)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and a != b
