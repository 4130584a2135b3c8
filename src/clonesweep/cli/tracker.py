"""What every progress view knows of a running sweep, and how it writes numbers.

:class:`Tracker` is fed the loop's events (in the driver's thread) by each view of
:mod:`clonesweep.cli.progress` and :mod:`clonesweep.cli.events`: the running trials with
their latest epoch and value, the counts, the best trial and the time-left estimate, which
starts once the first trial of this run has finished, from the throughput since the first
trial started (starting Ray and importing Keras is not counted).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clonesweep.orchestrator.sweep import BestTrial, Counts
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import TrialResult, TrialSpec

__all__ = ["Clock", "Running", "Tracker", "clock_text", "next_commands", "params_text",
           "state_text", "value_text"]

Clock = Callable[[], float]


def clock_text(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def value_text(value: float | None) -> str:
    """Four decimals where that reads well; very large or small values in 3 digits."""
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3g}"


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={value_text(v) if isinstance(v, float) else v}"
                    for k, v in params.items())


def state_text(result: TrialResult, retried: bool) -> str:
    """``complete``, ``pruned``, ``fail:<reason>`` or ``retry:<reason>``: at most 19 chars."""
    state = "retry" if retried else result.state.value
    return f"{state}:{result.reason.value}" if result.reason is not None else state


def next_commands(spec: SweepSpec) -> list[str]:
    """What to try once a sweep has run: the report, the dashboard, an ensemble of the best."""
    file = spec.file
    return [f"clonesweep report {file}", f"clonesweep dashboard {file}",
            f"clonesweep ensemble {file} --from-best --members 5"]


@dataclass
class Running:
    """One trial between its start and its end, as the views show it."""

    number: int
    params: dict[str, Any]
    epochs: int
    started: float
    epoch: int = 0  # epochs done
    value: float | None = None  # the latest epoch's objective value


@dataclass
class Tracker:
    """What every view knows of the sweep, fed by the loop's events in its thread."""

    clock: Clock = time.monotonic
    spec: SweepSpec | None = None
    budget: int = 0
    already: int = 0
    metric: str = ""
    epochs: int = 0
    running: dict[int, Running] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    best: BestTrial | None = None
    first_start: float | None = None
    started: float = 0.0

    def start(self, spec: SweepSpec, already: int) -> None:
        self.spec, self.budget, self.already = spec, spec.sweep.trials, already
        self.metric, self.epochs = spec.objective.metric, spec.training.epochs
        self.started = self.clock()

    def trial_start(self, spec: TrialSpec) -> Running:
        now = self.clock()
        if self.first_start is None:
            self.first_start = now
        epochs = spec.params.get("train.epochs", self.epochs)
        row = Running(spec.number, dict(spec.params), int(epochs), now)
        self.running[spec.number] = row
        return row

    def epoch(self, number: int, epoch: int, value: float) -> Running | None:
        row = self.running.get(number)
        if row is not None:
            row.epoch, row.value = epoch + 1, value
        return row

    def trial_end(self, result: TrialResult, counts: Counts, best: BestTrial | None,
                  retried: bool) -> Running | None:
        """The trial's row (kept while a retry runs, else removed)."""
        self.counts, self.best = counts, best
        row = self.running.get(result.number)
        if retried and row is not None:
            self.running[result.number] = Running(row.number, row.params, row.epochs,
                                                  self.clock())
            return row
        return self.running.pop(result.number, None)

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left_s(self) -> float | None:
        """Seconds left at this run's throughput; None until a trial of this run finished."""
        done = self.counts.finished
        if done == 0 or self.first_start is None:
            return None
        rate = done / max(self.clock() - self.first_start, 1e-9)
        return max(self.budget - self.already - done, 0) / rate

    def status_parts(self) -> list[str]:
        """The status line's parts, most useful first (a narrow view drops the last ones)."""
        c = self.counts
        parts = [f"done {self.already + c.finished}/{self.budget}",
                 f"running {len(self.running)}"]
        left = self.left_s()
        parts.append(f"~{clock_text(left)} left" if left is not None else "estimating")
        if self.best is not None:
            parts.append(f"best {value_text(self.best.value)} (#{self.best.number})")
        parts.append(f"{c.complete} complete, {c.pruned} pruned, {c.failed} failed")
        parts.append(f"{clock_text(self.elapsed())} elapsed")
        return parts

    def end_value(self, result: TrialResult, row: Running | None) -> tuple[float | None, int]:
        """A finished trial's value and epochs done: a pruned or failed trial shows its last
        reported value and the epoch it stopped at."""
        history = result.history.get(self.metric, [])
        epoch = max(len(history), row.epoch if row else 0)
        if result.value is not None:
            return result.value, epoch
        if row is not None and row.value is not None:
            return row.value, epoch
        return (history[-1] if history else None), epoch
