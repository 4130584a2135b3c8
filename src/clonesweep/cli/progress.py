"""Progress of a running sweep: a live table on a terminal, plain lines when piped."""

from __future__ import annotations

from typing import Any, TextIO

from clonesweep.orchestrator.sweep import BestTrial, Counts, SweepOutcome
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import TrialResult, TrialSpec, node_host

__all__ = ["LineProgress", "TerminalProgress", "make_progress"]


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


class LineProgress:
    """One line per event, nothing rewritten: for pipes, logs and CI."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.budget = 0
        self.metric = ""
        self.params: dict[int, dict[str, Any]] = {}

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def on_start(self, spec: SweepSpec, storage: str, already_finished: int) -> None:
        self.budget, self.metric = spec.sweep.trials, spec.objective.metric
        resumed = f", {already_finished} already finished" if already_finished else ""
        self._line(f"sweep {spec.name}: {spec.sweep.trials} trials, {spec.sweep.parallel} at a "
                   f"time, {spec.objective.direction.value} {spec.objective.metric}{resumed}")
        self._line(f"study: {storage}")
        self._line(f"{'trial':>5}  {'state':<9} {self.metric:>12} {'train s':>8}  "
                   f"{'host':<12} params")

    def on_trial_start(self, spec: TrialSpec) -> None:
        self.params[spec.number] = spec.params

    def _row(self, result: TrialResult, retried: bool) -> str:
        state = result.state.value if not retried else "retry"
        if result.reason is not None:
            state = f"{state}:{result.reason.value}"
        value = "" if result.value is None else f"{result.value:.4f}"
        params = _short_params(self.params.get(result.number, {}))
        train_s = result.timings.train_s
        host = node_host(result.node) or "-"
        return (f"{result.number:>5}  {state:<9} {value:>12} {train_s:>8.1f}  {host:<12} "
                f"{params}")

    def on_trial_end(self, result: TrialResult, counts: Counts, best: BestTrial | None,
                     retried: bool) -> None:
        self._line(self._row(result, retried))
        if not retried:  # a finished trial's params are not needed again: memory stays flat
            self.params.pop(result.number, None)
        if result.message and result.reason is not None:
            self._line(f"       {result.message.splitlines()[0][:200]}")

    def on_tick(self, counts: Counts, best: BestTrial | None, elapsed: float) -> None:
        pass

    def on_end(self, outcome: SweepOutcome) -> None:
        c = outcome.counts
        self._line(f"done in {_clock(outcome.wall_s)}: {c.complete} complete, {c.pruned} pruned, "
                   f"{c.failed} failed, {c.retried} retried")
        if outcome.note:
            self._line(outcome.note)
        if outcome.best is not None:
            self._line(f"best: trial {outcome.best.number} {self.metric}="
                       f"{outcome.best.value:.4f} {_short_params(outcome.best.params)}")
        if outcome.best_model is not None:
            self._line(f"best model: {outcome.best_model}")
        for number, path in outcome.front_models.items():
            self._line(f"pareto-front model: trial {number}: {path}")
        if outcome.model_hint:
            self._line(outcome.model_hint)
        self._line(f"run folder: {outcome.run_folder}")


class TerminalProgress(LineProgress):
    """The same table, plus a status line at the bottom rewritten in place."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self._status = ""

    def _line(self, text: str) -> None:
        self.out.write("\r\033[K" + text + "\n" + self._status)
        self.out.flush()

    def on_tick(self, counts: Counts, best: BestTrial | None, elapsed: float) -> None:
        done = counts.finished
        eta = ""
        if done:
            left = max(self.budget - done - counts.running, 0)
            per = elapsed / done
            eta = f", ~{_clock(per * (left + counts.running * 0.5))} left"
        best_s = f" | best {best.value:.4f} (#{best.number})" if best else ""
        self._status = (f"running {counts.running} | done {done}/{self.budget} "
                        f"(complete {counts.complete}, pruned {counts.pruned}, failed "
                        f"{counts.failed}){best_s} | {_clock(elapsed)} elapsed{eta}")
        self.out.write("\r\033[K" + self._status)
        self.out.flush()

    def on_end(self, outcome: SweepOutcome) -> None:
        self._status = ""
        self.out.write("\r\033[K")
        super().on_end(outcome)


def make_progress(out: TextIO) -> LineProgress:
    """A live table on a terminal, plain lines otherwise."""
    return TerminalProgress(out) if out.isatty() else LineProgress(out)
