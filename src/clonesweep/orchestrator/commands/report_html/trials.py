"""The parts of the page read from the trials' records: the table, failures, environment.

Everything here comes from what the driver stored on each trial (``user_attrs``: history,
engine, fail reason, message, environment; see ``orchestrator/sweep.py``), so a report of a
sweep run by an older clonesweep shows empty cells rather than failing.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence

import optuna

from clonesweep.orchestrator.commands.report_html.cells import Cell, cell, definitions, table
from clonesweep.spec.model import SweepSpec

__all__ = ["all_failed_banner", "environment_part", "epochs_of", "failures_part",
           "trials_table"]

FrozenTrial = optuna.trial.FrozenTrial
State = optuna.trial.TrialState


def epochs_of(trial: FrozenTrial) -> int:
    """How many epochs the trial trained (its history's length, else its reports')."""
    history = trial.user_attrs.get("history") or {}
    lengths = [len(v) for v in history.values() if isinstance(v, list)]
    if lengths:
        return max(lengths)
    return max(trial.intermediate_values, default=-1) + 1


def _duration(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def _message_html(message: str, limit: int = 4000) -> str:
    """A message folded behind its first line (tracebacks run long)."""
    text = message.strip()[-limit:]
    first = text.splitlines()[-1] if text else ""
    return (f"<details><summary>{html.escape(first[:160])}</summary>"
            f"<pre>{html.escape(text)}</pre></details>")


def _engine(engine: str) -> Cell:
    """``keras: <why not graph>`` shows as ``keras``, the reason on hover."""
    return Cell(engine.split(":", 1)[0], title=engine if ":" in engine else "")


def _param_names(trials: Sequence[FrozenTrial]) -> list[str]:
    names: dict[str, None] = {}
    for t in trials:
        names.update(dict.fromkeys(t.params))
    return list(names)


def trials_table(spec: SweepSpec, trials: Sequence[FrozenTrial]) -> str:
    """Every trial, one row each: number, state, value(s), params, epochs, duration, engine,
    fail reason. Sortable by any column."""
    params = _param_names(trials)
    metrics = [o.metric for o in spec.objectives]
    head = ["#", "state", *metrics, *params, "epochs", "duration s", "engine", "fail reason"]
    rows = []
    for t in trials:
        values: list[float | None] = list(t.values) if t.values else [None] * len(metrics)
        state = t.state.name.lower()
        reason = str(t.user_attrs.get("fail_reason", "")) if t.state is State.FAIL else ""
        rows.append([
            cell(t.number), Cell(state, css=f"state-{state}"),
            *(cell(v) for v in values[:len(metrics)]),
            *(cell(t.params.get(p)) for p in params),
            cell(epochs_of(t)), cell(_duration(t)),
            _engine(str(t.user_attrs.get("engine") or "")), cell(reason),
        ])
    return table(head, rows, css="trials")


def failures_part(trials: Sequence[FrozenTrial]) -> str:
    """The failed trials, counted by reason, each with its message."""
    failed = [t for t in trials if t.state is State.FAIL]
    if not failed:
        return ""
    reasons = Counter(str(t.user_attrs.get("fail_reason", "unknown")) for t in failed)
    counts = ", ".join(f"{n} {html.escape(r)}" for r, n in reasons.most_common())
    rows = [[cell(t.number), cell(str(t.user_attrs.get("fail_reason", "unknown"))),
             cell(t.user_attrs.get("attempt")),
             cell(", ".join(f"{k}={cell(v).text}" for k, v in t.params.items())),
             Cell(_message_html(str(t.user_attrs.get("message", ""))), raw_html=True)]
            for t in failed]
    return (f'<h2 id="failures">Failures ({len(failed)}: {counts})</h2>'
            + '<div class="scroll">'
            + table(["#", "reason", "attempt", "params", "message"], rows, css="failures")
            + "</div>")


def all_failed_banner(trials: Sequence[FrozenTrial]) -> str:
    """When no trial completed: why, on top of the page (reasons and the first message)."""
    if not trials or any(t.state is State.COMPLETE for t in trials):
        return ""
    states = Counter(t.state.name.lower() for t in trials)
    failed = [t for t in trials if t.state is State.FAIL]
    reasons = Counter(str(t.user_attrs.get("fail_reason", "unknown")) for t in failed)
    said = ", ".join(f"{n} {s}" for s, n in states.most_common())
    parts = [f"<strong>No trial completed</strong> ({len(trials)} trials: {html.escape(said)})."]
    if reasons:
        why = ", ".join(f"{html.escape(r)} ({n})" for r, n in reasons.most_common())
        parts.append(f"Fail reasons: {why}.")
        first = min(failed, key=lambda t: t.number)
        message = str(first.user_attrs.get("message", "")).strip()
        if message:
            parts.append(f"First message (trial {first.number}):"
                         f"<pre>{html.escape(message[-1500:])}</pre>")
    parts.append("No plots are drawn: they need a completed trial.")
    return '<div class="alert">' + " ".join(parts) + "</div>"


def environment_part(trials: Sequence[FrozenTrial], versions: dict[str, str]) -> str:
    """The versions the workers trained with (from each trial's ``environment``), and the
    versions that drew this page. A key with several values lists each with its count."""
    seen: dict[str, Counter[str]] = {}
    for t in trials:
        for key, value in (t.user_attrs.get("environment") or {}).items():
            seen.setdefault(str(key), Counter())[str(value)] += 1
    rows = [(key, values.most_common(1)[0][0] if len(values) == 1 else
             "; ".join(f"{v} ({n} trials)" for v, n in values.most_common()))
            for key, values in sorted(seen.items())]
    nodes = Counter(str(t.user_attrs["node"]) for t in trials if t.user_attrs.get("node"))
    if nodes:
        rows.append(("nodes", ", ".join(f"{n} ({c} trials)" for n, c in nodes.most_common())))
    drew = [(f"report: {k}", v) for k, v in versions.items()]
    body = definitions(rows) if rows else "<p>No trial recorded its environment.</p>"
    return '<h2 id="environment">Environment</h2>' + body + definitions(drew)
