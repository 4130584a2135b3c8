"""``clonesweep report``: one self-contained HTML page per sweep, drawn by Optuna's own plots.

The page holds the counts and the best trial, the optimization history, parallel
coordinates, parameter importances, the intermediate values of pruned and finished trials,
and the best trial's config as a diff against the base model. plotly.js is embedded once,
so the file opens offline.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Callable
from typing import Any

import optuna

from clonesweep.orchestrator._optuna import storage_of
from clonesweep.orchestrator.commands.inspect import trial_diff
from clonesweep.orchestrator.trialrecord import read_in
from clonesweep.spec.model import SweepSpec

__all__ = ["render_report"]


def _figures(study: optuna.Study, metric: str) -> list[tuple[str, Callable[[], Any]]]:
    vis = optuna.visualization
    return [
        ("Optimization history",
         lambda: vis.plot_optimization_history(study, target_name=metric)),
        ("Parallel coordinates",
         lambda: vis.plot_parallel_coordinate(study, target_name=metric)),
        ("Parameter importances",
         lambda: vis.plot_param_importances(study, target_name=metric)),
        ("Intermediate values (per epoch)", lambda: vis.plot_intermediate_values(study)),
    ]


def _figure_html(make: Callable[[], Any], first: bool) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            figure = make()
    except Exception as exc:  # e.g. importances need two complete trials
        return f'<p class="skipped">Not drawn: {html.escape(str(exc))}</p>'
    return str(figure.to_html(full_html=False, include_plotlyjs="inline" if first else False,
                              default_width="100%", default_height="460px"))


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _summary(spec: SweepSpec, study: optuna.Study) -> tuple[str, optuna.trial.FrozenTrial | None]:
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    try:
        best: optuna.trial.FrozenTrial | None = study.best_trial
    except ValueError:
        best = None
    rows = [("trials", len(trials)), *sorted(counts.items()),
            ("objective", f"{spec.objective.direction.value} {spec.objective.metric}")]
    if best is not None:
        rows.append(("best trial", f"#{best.number}: {best.value}"))
        rows.extend((f"best {k}", v)
                    for k, v in read_in(study, best, spec.parameters).applied.items())
    return _table(rows, ("", "")), best


def _ensemble_study(spec: SweepSpec, study: optuna.Study) -> optuna.Study | None:
    name = f"{spec.name}-ensemble"
    storage = storage_of(study)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if name not in names:
        return None
    ens = optuna.load_study(study_name=name, storage=storage)
    return ens if "ensemble" in ens.user_attrs else None


def _ensemble_parts(spec: SweepSpec, study: optuna.Study, *, first_plot: bool) -> list[str]:
    """The members' metric against the ensemble's own, when the sweep has an ensemble."""
    ens = _ensemble_study(spec, study)
    if ens is None:
        return []
    summary = ens.user_attrs["ensemble"]
    metric = spec.objective.metric
    scores: dict[str, float] = summary.get("ensemble", {})
    own = scores.get(metric, scores.get(metric.removeprefix("val_")))

    def figure() -> Any:
        fig = optuna.visualization.plot_optimization_history(ens, target_name=metric)
        if own is not None:
            fig.add_hline(y=own, line_dash="dash", annotation_text=f"ensemble {own:.4f}")
        fig.update_layout(title=f"Members (trial = member) against the ensemble's {metric}")
        return fig

    rows = [(r["metric"], r["ensemble"], r["mean"], r["std"], r["min"], r["max"])
            for r in summary.get("table", [])]
    held = f"{summary.get('members_held')} of {summary.get('members_asked')} members"
    return [f"<h2>Ensemble ({html.escape(held)})</h2>",
            f'<section class="plot">{_figure_html(figure, first=first_plot)}</section>',
            _table(rows, ("metric", "ensemble", "mean", "std", "min", "max"))]


def render_report(spec: SweepSpec, study: optuna.Study) -> str:
    """The HTML page for the sweep's study (see the module docstring)."""
    summary, best = _summary(spec, study)
    parts = [f"<h1>Sweep {html.escape(spec.name)}</h1>", summary]
    for i, (title, make) in enumerate(_figures(study, spec.objective.metric)):
        parts.append(f'<section class="plot"><h2>{html.escape(title)}</h2>'
                     f"{_figure_html(make, first=i == 0)}</section>")
    parts.extend(_ensemble_parts(spec, study, first_plot=False))
    if best is not None:
        changes = trial_diff(spec, study, best.number)
        parts.append(f"<h2>Best trial #{best.number} against the base model</h2>")
        parts.append(_table([(c.path, c.before, c.after) for c in changes],
                            ("path", "base", f"trial {best.number}")))
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
             ".skipped{color:#a00}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>clonesweep: "
            f"{html.escape(spec.name)}</title><style>{style}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
