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
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from clonesweep.cli.tracker import (
    Clock,
    Running,
    Tracker,
    clock_text,
    next_commands,
    params_text,
    state_text,
    value_text,
)
from clonesweep.orchestrator.sweep import BestTrial, Counts, SweepOutcome
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import TrialResult, TrialSpec, TrialState, node_host

__all__ = ["LineProgress", "TerminalProgress", "make_progress", "notebook_or_lines"]

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
        pack = spec.training.pack
        packed = f", packed by up to {pack.max_trials} on JAX" if pack.enabled else ""
        self._line(f"sweep {spec.name}: {spec.sweep.trials} trials, {spec.sweep.parallel} at a "
                   f"time{packed}, {spec.objective.direction.value} {spec.objective.metric}"
                   f"{resumed}")
        self._line(f"study: {storage}")
        self._line(f"{'trial':>5} {'state':<19} {self.tracker.metric[:12]:>12} {'epoch':>7} "
                   f"{'train s':>7} {'host':<12} params")

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
        host = node_host(result.node) or "-"  # the machine the trial ran on
        self._line(f"{n:>5} {state:<19} {value:>12} {epoch:>7} {secs:>7} {host:<12} {params}")
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
        if outcome.note:  # why nothing more was asked: a met budget, an exhausted grid
            self._line(outcome.note)
        if outcome.best is not None:
            self._line(f"best: trial {outcome.best.number} {self.tracker.metric}="
                       f"{value_text(outcome.best.value)} {params_text(outcome.best.params)}")
        if outcome.best_model is not None:
            self._line(f"best model: {outcome.best_model}")
        for number, path in outcome.front_models.items():
            self._line(f"pareto-front model: trial {number}: {path}")
        if outcome.model_hint:  # no worker kept the answer's model: how to get it
            self._line(outcome.model_hint)
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
        # Lines printed to stdout meanwhile (Ray's cluster events) go above the live region,
        # when it is on stdout; redrawn only on events: no refresh thread.
        self._live = Live(console=self.console, auto_refresh=False, transient=True,
                          redirect_stdout=out is sys.stdout, redirect_stderr=False)

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


# The Python API's view (clonesweep.run): screen code lives here, below no library module.
def notebook_or_lines(spec: SweepSpec, progress: bool) -> Any:
    """In a notebook, the live view (Rich draws it in the cell's output); elsewhere plain
    lines. No "next:" commands: they would name the temporary copy of a dict sweep. With
    ``sweep.tensorboard``, TensorBoard logs too."""
    from clonesweep.cli.events import FanOut
    from clonesweep.orchestrator.sweep import NullProgress

    views: list[Any] = []
    if progress and Console().is_jupyter:
        live = TerminalProgress(sys.stdout)
        live.next_steps = False
        views.append(live)
    elif progress:
        views.append(LineProgress(sys.stdout, next_steps=False))
    if spec.sweep.tensorboard:
        from clonesweep.orchestrator.tensorboard import TensorBoardLogs

        views.append(TensorBoardLogs(spec))
    return FanOut(*views) if views else NullProgress()
