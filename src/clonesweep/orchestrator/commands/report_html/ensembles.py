"""Every ensemble of the sweep: its members' spread against the ensemble's own metric.

An ensemble is a study of its own in the sweep's storage (``<sweep name>-ensemble`` by
default, any ``--study`` name otherwise; see ``orchestrator/ensemble/run.py``), its members
its trials. A study is one of this sweep's ensembles when it is an ensemble study
(``export.finish`` recorded its ``ensemble`` summary, or it carries the default name) and its
params came from a trial of this sweep's study (its recorded source says so), or else its
name starts with ``<sweep name>-`` (and no longer sweep name in the storage), or the storage
is the sweep's own SQLite file (which holds nothing else). An ensemble interrupted
before it was scored shows its members without the ensemble's own metric.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from clonesweep.orchestrator._optuna import storage_of
from clonesweep.orchestrator.commands.report_html.cells import cell, definitions, table
from clonesweep.orchestrator.search import monitored_objective
from clonesweep.spec.model import SweepSpec

__all__ = ["Ensemble", "ensemble_parts", "find_ensembles", "spread_figure"]


@dataclass(frozen=True)
class Ensemble:
    """One ensemble study as the page shows it."""

    name: str
    summary: dict[str, Any]  # the ``ensemble`` user attr; empty when never scored
    members: list[optuna.trial.FrozenTrial]

    @property
    def values(self) -> list[float]:
        return [float(t.value) for t in self.members
                if t.state is optuna.trial.TrialState.COMPLETE and t.value is not None]

    def own(self, metric: str) -> float | None:
        """The ensemble's own score of ``metric`` (its mean prediction), if scored."""
        scores: dict[str, float] = self.summary.get("ensemble") or {}
        value = scores.get(metric, scores.get(metric.removeprefix("val_")))
        return None if value is None else float(value)


_SOURCE_STUDY = re.compile(r"of study (['\"])(?P<name>.*)\1$")


def _belongs(spec: SweepSpec, name: str, attrs: dict[str, Any], sweeps: set[str]) -> bool:
    """Is study ``name`` (with user attrs ``attrs``) one of this sweep's ensembles?
    ``sweeps``: the storage's sweep studies, to give ``a-b-ensemble`` to sweep ``a-b``
    rather than to sweep ``a``."""
    if name == spec.name or not (name.startswith(f"{spec.name}-ensemble")
                                 or "ensemble" in attrs):
        return False
    source = _SOURCE_STUDY.search(str((attrs.get("ensemble") or {}).get("source", "")))
    if source:  # its params came from a sweep's trial: that sweep's
        return source.group("name") == spec.name
    owner = max((s for s in sweeps | {spec.name} if name.startswith(f"{s}-")), key=len,
                default=None)
    return owner == spec.name or (owner is None and spec.sweep.storage is None)


def find_ensembles(spec: SweepSpec, study: optuna.Study) -> list[Ensemble]:
    """The sweep's ensembles in its storage, by name."""
    storage = storage_of(study)
    summaries = sorted(optuna.get_all_study_summaries(storage, include_best_trial=False),
                       key=lambda s: s.study_name)
    sweeps = {s.study_name for s in summaries if "base_config" in s.user_attrs}
    found = []
    for summary in summaries:
        if not _belongs(spec, summary.study_name, dict(summary.user_attrs), sweeps):
            continue
        ens = optuna.load_study(study_name=summary.study_name, storage=storage)
        members = ens.get_trials(deepcopy=False)
        if members:
            found.append(Ensemble(summary.study_name, dict(ens.user_attrs.get("ensemble", {})),
                                  members))
    return found


def spread_figure(spec: SweepSpec, ensembles: list[Ensemble]) -> Callable[[], Any]:
    """A box per ensemble with every member as a point, and the ensemble's own score as a
    diamond beside it: the spread the seeds alone cause, against what averaging buys."""
    metric = monitored_objective(spec).metric

    def make() -> Any:
        import plotly.graph_objects as go

        fig = go.Figure()
        for i, ens in enumerate(ensembles):
            fig.add_box(y=ens.values, name=ens.name, boxpoints="all", jitter=0.4, pointpos=0,
                        marker={"color": "#1f77b4", "size": 7}, line={"color": "#1f77b4"},
                        showlegend=False,
                        hovertemplate=f"member {metric} %{{y:.4g}}<extra>{ens.name}</extra>")
            own = ens.own(metric)
            if own is not None:
                fig.add_scatter(x=[ens.name], y=[own], mode="markers+text",
                                marker={"symbol": "diamond", "size": 14, "color": "#d62728"},
                                text=[f"ensemble {own:.4g}"], textposition="middle right",
                                name="the ensemble (mean prediction)",
                                showlegend=i == 0, hovertemplate=f"ensemble {metric} "
                                "%{y:.4g}<extra></extra>")
        fig.update_layout(yaxis_title=f"member {metric}", xaxis_title="ensemble study",
                          boxmode="group", margin={"t": 30})
        return fig

    return make


def ensemble_parts(ens: Ensemble) -> str:
    """One ensemble's facts, its metric table and its failed members."""
    s = ens.summary
    facts = [("members held", f"{s.get('members_held', len(ens.values))} of "
              f"{s.get('members_asked', len(ens.members))}"),
             ("params from", s.get("source", "")), ("ensemble seed", s.get("ensemble_seed")),
             ("fused", s.get("fused"))]
    if s.get("fused_note"):
        facts.append(("fused note", s["fused_note"]))
    parts = [f"<h3>{html.escape(ens.name)}</h3>", definitions(facts)]
    if not s:
        parts.append('<p class="skipped">Not scored: the ensemble did not finish.</p>')
    rows = [[cell(r["metric"]), cell(r["ensemble"]), cell(r["mean"]), cell(r["std"]),
             cell(r["min"]), cell(r["max"])] for r in s.get("table", [])]
    if rows:
        parts.append(table(["metric", "ensemble", "member mean", "std", "min", "max"], rows))
    failed = [t for t in ens.members if t.state is optuna.trial.TrialState.FAIL]
    if failed:
        parts.append(table(["failed member", "reason", "message"], [
            [cell(t.user_attrs.get("member_index", t.number)),
             cell(t.user_attrs.get("fail_reason", "unknown")),
             cell(str(t.user_attrs.get("message", ""))[-300:])] for t in failed]))
    return "".join(parts)
