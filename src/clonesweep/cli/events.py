"""``clonesweep run --json``: the sweep as a stream of JSON lines, one object per event.

Each line is one JSON object with ``event`` (``run_started``, ``trial_started``, ``epoch``,
``trial_finished``, ``summary``) and ``t`` (seconds since the run started); the fields of
each event are listed in docs/json-events.md. Lines are flushed as they are written, so a
script can follow a sweep with ``for line in proc.stdout``. Non-finite numbers (a NaN loss)
are written as ``null``: the stream is strict JSON.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, TextIO

from clonesweep.cli.tracker import Clock, Tracker, next_commands
from clonesweep.orchestrator.sweep import BestTrial, Counts, SweepOutcome
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import TrialResult, TrialSpec

__all__ = ["EVENTS", "FanOut", "JsonLinesProgress"]

#: Every event name, in the order a run emits them.
EVENTS = ("run_started", "trial_started", "epoch", "trial_finished", "summary")


def _finite(value: Any) -> Any:
    """NaN and infinities as None, recursively: strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class JsonLinesProgress:
    """Writes each event of the sweep as one JSON line to ``out``."""

    def __init__(self, out: TextIO, *, clock: Clock = time.monotonic) -> None:
        self.out = out
        self.tracker = Tracker(clock)

    def _emit(self, event: str, **fields: Any) -> None:
        payload = {"event": event, "t": round(self.tracker.elapsed(), 3), **fields}
        self.out.write(json.dumps(_finite(payload), default=str, allow_nan=False) + "\n")
        self.out.flush()

    def on_start(self, spec: SweepSpec, storage: str, already_finished: int) -> None:
        self.tracker.start(spec, already_finished)
        self._emit("run_started", name=spec.name, file=str(spec.file), storage=storage,
                   budget=spec.sweep.trials, parallel=spec.sweep.parallel,
                   already_finished=already_finished,
                   objectives=[{"metric": o.metric, "direction": o.direction.value}
                               for o in spec.objectives],
                   epochs=spec.training.epochs, run_folder=str(spec.run_folder))

    def on_trial_start(self, spec: TrialSpec) -> None:
        row = self.tracker.trial_start(spec)
        self._emit("trial_started", number=spec.number, params=spec.params, seed=spec.seed,
                   attempt=spec.attempt, epochs=row.epochs)

    def on_epoch(self, number: int, epoch: int, value: float) -> None:
        row = self.tracker.epoch(number, epoch, value)
        self._emit("epoch", number=number, epoch=epoch + 1,
                   epochs=row.epochs if row else self.tracker.epochs,
                   metric=self.tracker.metric, value=value)

    def on_trial_end(self, result: TrialResult, counts: Counts, best: BestTrial | None,
                     retried: bool) -> None:
        row = self.tracker.trial_end(result, counts, best, retried)
        value, epochs_done = self.tracker.end_value(result, row)
        self._emit("trial_finished", number=result.number,
                   state="retry" if retried else result.state.value,
                   reason=result.reason.value if result.reason else None,
                   value=value, epochs_done=epochs_done, attempt=result.attempt,
                   train_s=round(result.timings.train_s, 3),
                   message=result.message.splitlines()[0][:500] if result.message else None,
                   finished=self.tracker.already + counts.finished, budget=self.tracker.budget,
                   best=None if best is None else {"number": best.number, "value": best.value})

    def on_tick(self, counts: Counts, best: BestTrial | None, elapsed: float) -> None:
        self.tracker.counts, self.tracker.best = counts, best

    def on_end(self, outcome: SweepOutcome) -> None:
        from clonesweep.orchestrator.records import summary

        spec = self.tracker.spec
        self._emit("summary", **summary(outcome), run_folder=str(outcome.run_folder),
                   next_commands=next_commands(spec) if spec is not None else [])

    def close(self) -> None:
        """Nothing to undo: every line was flushed as it was written."""


class FanOut:
    """Hands each event to several views (``--json``: the stream and the human view)."""

    def __init__(self, *views: Any) -> None:
        self.views = views

    def on_start(self, spec: SweepSpec, storage: str, already_finished: int) -> None:
        for v in self.views:
            v.on_start(spec, storage, already_finished)

    def on_trial_start(self, spec: TrialSpec) -> None:
        for v in self.views:
            v.on_trial_start(spec)

    def on_epoch(self, number: int, epoch: int, value: float) -> None:
        for v in self.views:
            v.on_epoch(number, epoch, value)

    def on_trial_end(self, result: TrialResult, counts: Counts, best: BestTrial | None,
                     retried: bool) -> None:
        for v in self.views:
            v.on_trial_end(result, counts, best, retried)

    def on_tick(self, counts: Counts, best: BestTrial | None, elapsed: float) -> None:
        for v in self.views:
            v.on_tick(counts, best, elapsed)

    def on_end(self, outcome: SweepOutcome) -> None:
        for v in self.views:
            v.on_end(outcome)

    def close(self) -> None:
        for v in self.views:
            v.close()
