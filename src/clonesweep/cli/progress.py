"""Progress of a running sweep: a live view on a terminal, plain lines when piped.

Every view receives the loop's events (:class:`clonesweep.orchestrator.sweep.Progress`) and
keeps what it shows in one :class:`Tracker`: the running trials with their latest epoch and
value, the counts, and a time-left estimate. Three views:

* :class:`TerminalProgress` (a TTY): drawn with Rich. Finished trials scroll above a live
  region that holds one row per running trial and a status line; the region is redrawn in
  place, so no stale status line is left behind. Every row fits the console's width: the
  params column is cut with an ellipsis, the status line drops its least useful parts.
* :class:`LineProgress` (piped, CI logs): one line per finished trial, nothing rewritten, and
  a status line every ``heartbeat_s`` seconds so a long trial still shows signs of life.
* :class:`clonesweep.cli.events.JsonLinesProgress` (``--json``): one JSON object per event.

The time-left estimate starts once the first trial of this run has finished, from the
throughput since the first trial started: starting Ray and importing Keras is not counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from clonesweep.orchestrator.sweep import BestTrial, Counts, SweepOutcome
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import TrialResult, TrialSpec, TrialState

__all__ = ["LineProgress", "TerminalProgress", "Tracker", "make_progress", "next_commands"]

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


class LineProgress:
    """One line per finished trial, nothing rewritten, a status line every ``heartbeat_s``."""

    def __init__(self, out: TextIO, *, clock: Clock = time.monotonic,
                 heartbeat_s: float = 30.0, next_steps: bool = True) -> None:
        self.out = out
        self.tracker = Tracker(clock)
        self.heartbeat_s = heartbeat_s
        self.next_steps = next_steps
        self._last_status = 0.0

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def on_start(self, spec: SweepSpec, storage: str, already_finished: int) -> None:
        self.tracker.start(spec, already_finished)
        self._last_status = self.tracker.clock()
        resumed = f", {already_finished} already finished" if already_finished else ""
        self._line(f"sweep {spec.name}: {spec.sweep.trials} trials, {spec.sweep.parallel} at a "
                   f"time, {spec.objective.direction.value} {spec.objective.metric}{resumed}")
        self._line(f"study: {storage}")
        self._line(f"{'trial':>5} {'state':<19} {self.tracker.metric[:12]:>12} {'epoch':>7} "
                   f"{'train s':>7} params")

    def on_trial_start(self, spec: TrialSpec) -> None:
        self.tracker.trial_start(spec)

    def on_epoch(self, number: int, epoch: int, value: float) -> None:
        self.tracker.epoch(number, epoch, value)

    def row(self, result: TrialResult, row: Running | None, retried: bool) -> list[str]:
        """A finished trial's cells: trial, state, value, epoch k/N, train s, params."""
        value, epoch = self.tracker.end_value(result, row)
        epochs = row.epochs if row else self.tracker.epochs
        params = params_text(row.params) if row else ""
        return [str(result.number), state_text(result, retried), value_text(value),
                f"{epoch}/{epochs}", f"{result.timings.train_s:.1f}", params]

    def on_trial_end(self, result: TrialResult, counts: Counts, best: BestTrial | None,
                     retried: bool) -> None:
        row = self.tracker.trial_end(result, counts, best, retried)
        n, state, value, epoch, secs, params = self.row(result, row, retried)
        self._line(f"{n:>5} {state:<19} {value:>12} {epoch:>7} {secs:>7} {params}")
        if result.message and result.reason is not None:
            self._line(f"      {result.message.splitlines()[0][:200]}")

    def on_tick(self, counts: Counts, best: BestTrial | None, elapsed: float) -> None:
        self.tracker.counts, self.tracker.best = counts, best
        now = self.tracker.clock()
        if now - self._last_status >= self.heartbeat_s:
            self._last_status = now
            self._line("status: " + " | ".join(self.tracker.status_parts()))

    def on_end(self, outcome: SweepOutcome) -> None:
        c = outcome.counts
        self._line(f"done in {clock_text(outcome.wall_s)}: {c.complete} complete, {c.pruned} "
                   f"pruned, {c.failed} failed, {c.retried} retried")
        if outcome.best is not None:
            self._line(f"best: trial {outcome.best.number} {self.tracker.metric}="
                       f"{value_text(outcome.best.value)} {params_text(outcome.best.params)}")
        if outcome.best_model is not None:
            self._line(f"best model: {outcome.best_model}")
        self._line(f"run folder: {outcome.run_folder}")
        if self.next_steps and self.tracker.spec is not None and c.complete + c.pruned:
            self._line("next:")
            for command in next_commands(self.tracker.spec):
                self._line(f"  {command}")

    def close(self) -> None:
        """Called once the sweep has stopped, however it stopped: nothing to undo here."""


_STYLES = {TrialState.COMPLETE: "green", TrialState.PRUNED: "yellow", TrialState.FAIL: "red"}


def _grid() -> Table:
    """The columns every row shares: fixed widths, the params column takes what is left."""
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(justify="right", width=5, no_wrap=True)            # trial
    table.add_column(width=19, no_wrap=True, overflow="ellipsis")       # state
    table.add_column(justify="right", width=12, no_wrap=True, overflow="ellipsis")  # value
    table.add_column(justify="right", width=7, no_wrap=True)            # epoch k/N
    table.add_column(justify="right", width=7, no_wrap=True)            # seconds
    table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")        # params
    return table


class TerminalProgress(LineProgress):
    """Finished rows scroll; running trials and a status line are redrawn below them."""

    def __init__(self, out: TextIO, *, clock: Clock = time.monotonic,
                 console: Console | None = None) -> None:
        super().__init__(out, clock=clock)
        self.console = console or Console(file=out, highlight=False)
        self._live = Live(console=self.console, auto_refresh=False, transient=True,
                          redirect_stdout=False, redirect_stderr=False)

    def _line(self, text: str) -> None:
        self.console.print(Text(text), overflow="fold")

    def on_start(self, spec: SweepSpec, storage: str, already_finished: int) -> None:
        super().on_start(spec, storage, already_finished)
        self._live.start()
        self.refresh()

    def on_epoch(self, number: int, epoch: int, value: float) -> None:
        super().on_epoch(number, epoch, value)
        self.refresh()

    def on_trial_start(self, spec: TrialSpec) -> None:
        super().on_trial_start(spec)
        self.refresh()

    def on_trial_end(self, result: TrialResult, counts: Counts, best: BestTrial | None,
                     retried: bool) -> None:
        row = self.tracker.trial_end(result, counts, best, retried)
        grid = _grid()
        cells = self.row(result, row, retried)
        style = "magenta" if retried else _STYLES.get(result.state, "")
        grid.add_row(*[Text(c, style=style if i == 1 else "") for i, c in enumerate(cells)])
        self.console.print(grid)
        if result.message and result.reason is not None:
            self._line(f"      {result.message.splitlines()[0][:200]}")
        self.refresh()

    def on_tick(self, counts: Counts, best: BestTrial | None, elapsed: float) -> None:
        self.tracker.counts, self.tracker.best = counts, best
        self.refresh()

    def live_view(self) -> Group:
        """The redrawn region: a row per running trial, then the status line."""
        grid = _grid()
        now = self.tracker.clock()
        for r in sorted(self.tracker.running.values(), key=lambda r: r.number):
            grid.add_row(str(r.number), Text("running", style="cyan"), value_text(r.value),
                         f"{r.epoch}/{r.epochs}", f"{now - r.started:.0f}",
                         Text(params_text(r.params)))
        return Group(grid, Text(self._status(self.console.width), style="bold"))

    def _status(self, width: int) -> str:
        line = ""
        for part in self.tracker.status_parts():
            joined = f"{line} | {part}" if line else part
            if len(joined) > width:
                break
            line = joined
        return line

    def refresh(self) -> None:
        if self._live.is_started:
            self._live.update(self.live_view(), refresh=True)

    def on_end(self, outcome: SweepOutcome) -> None:
        self.close()
        super().on_end(outcome)

    def close(self) -> None:
        """Take the live region down (the sweep ended, or stopped on an error)."""
        if self._live.is_started:
            self._live.stop()


def make_progress(out: TextIO) -> LineProgress:
    """A live view on a terminal, plain lines otherwise."""
    return TerminalProgress(out) if out.isatty() else LineProgress(out)
