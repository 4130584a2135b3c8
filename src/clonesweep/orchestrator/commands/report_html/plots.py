"""The page's figures: Optuna's own plots where they apply, and the learning curves.

Each figure is turned into a ``<div>`` without plotly.js (the page embeds it once). A plot
that does not apply (importances need two complete trials, contours two params) is replaced
by a one-line note saying why. Optuna writes each trial's values and params into its hover
text at full precision; :func:`figure_html` rounds those numbers to 4 significant digits.
"""

from __future__ import annotations

import html
import math
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from clonesweep.orchestrator.commands.report_html.cells import fmt
from clonesweep.spec.model import SweepSpec

__all__ = ["Plot", "figure_html", "learning_curves", "metric_rows", "optuna_plots"]

Plot = tuple[str, Callable[[], Any], int]  # a section title, what draws it, its height (px)

_LONG_FLOAT = re.compile(r"-?\d+\.\d{5,}(?:e[-+]?\d+)?")
_MAX_CONTOUR_PARAMS = 4  # a contour grid of n params has n*n panels
_MAX_CURVES = 20  # more lines than this per panel do not read; the best ones are drawn


def _round_text(value: Any) -> Any:
    if isinstance(value, str):
        return _LONG_FLOAT.sub(lambda m: fmt(float(m.group())), value)
    if isinstance(value, (list, tuple)):
        return [_round_text(v) for v in value]
    return value


def figure_html(make: Callable[[], Any], height: int = 460) -> str:
    """The figure ``make()`` draws as a div (plotly.js not included), or a note why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning on some plots
            figure = make()
    except Exception as exc:  # e.g. importances need two complete trials
        return f'<p class="skipped">Not drawn: {html.escape(str(exc))}</p>'
    for trace in figure.data:
        if trace.type == "contour" and trace.z is not None:
            # A contour panel is a 100x100 grid at full precision: ~190 KB each, ~60 KB here.
            trace.z = [[v if v is None else float(f"{v:.4g}") for v in row] for row in trace.z]
        for attr in ("text", "hovertext"):
            if attr in trace and trace[attr] is not None:
                trace[attr] = _round_text(trace[attr])
    figure.update_xaxes(hoverformat=".4g")
    figure.update_yaxes(hoverformat=".4g")
    return str(figure.to_html(full_html=False, include_plotlyjs=False, default_width="100%",
                              default_height=f"{height}px", config={"displaylogo": False}))


def _contour_params(study: optuna.Study, target: Any) -> list[str]:
    """At most four params for the contour grid: the most important ones."""
    names = sorted({p for t in study.get_trials(deepcopy=False) for p in t.params})
    if len(names) < 2:
        raise ValueError("a contour plot needs at least two searched parameters")
    if len(names) <= _MAX_CONTOUR_PARAMS:
        return names
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ranked = list(optuna.importance.get_param_importances(study, target=target))
    except Exception:  # importances need two complete trials; any params then
        ranked = names
    return ranked[:_MAX_CONTOUR_PARAMS]


def optuna_plots(spec: SweepSpec, study: optuna.Study) -> list[Plot]:
    """Optuna's plots of the sweep's study. A multi-objective sweep gets its Pareto front,
    and the other plots show its first objective."""
    vis = optuna.visualization
    name = spec.objective.metric
    target: Callable[[optuna.trial.FrozenTrial], float] | None = None
    plots: list[Plot] = []
    n_params = len({p for t in study.get_trials(deepcopy=False) for p in t.params})
    if spec.is_multi_objective:
        def first(t: optuna.trial.FrozenTrial) -> float:
            return float(t.values[0])
        target = first
        names = [o.metric for o in spec.objectives]
        plots.append(("Pareto front", lambda: vis.plot_pareto_front(study, target_names=names),
                      460))
    else:
        plots.append(("Optimization history",
                      lambda: vis.plot_optimization_history(study, target_name=name), 460))
    plots += [
        ("Parallel coordinates",
         lambda: vis.plot_parallel_coordinate(study, target=target, target_name=name), 460),
        ("Parameter importances",
         lambda: vis.plot_param_importances(study, target=target, target_name=name), 400),
        ("Slices (each parameter against the objective)",
         lambda: vis.plot_slice(study, target=target, target_name=name), 420),
        ("Contours (pairs of parameters)",
         lambda: vis.plot_contour(study, params=_contour_params(study, target), target=target,
                                  target_name=name), 160 + 260 * min(n_params, 4)),
        ("Timeline (when each trial ran)", lambda: vis.plot_timeline(study),
         min(900, max(360, 200 + 22 * len(study.get_trials(deepcopy=False))))),
    ]
    return plots


def metric_rows(histories: Sequence[dict[str, list[float]]], objective: str) -> list[str]:
    """The metrics to draw, train name first: the objective's, then the loss, then others."""
    keys = {k for h in histories for k in h}
    bases = sorted({k.removeprefix("val_") for k in keys})
    first = objective.removeprefix("val_")
    order = sorted(bases, key=lambda b: (b != first, b != "loss", b))
    return order[:3]


def learning_curves(spec: SweepSpec, trials: Sequence[optuna.trial.FrozenTrial],
                    best: int | None) -> tuple[str, Callable[[], Any]] | None:
    """Train and validation curves per epoch from each trial's stored history (``history``
    user attr); None when no trial stored one. Rows: metrics; columns: train, validation."""
    from plotly.subplots import make_subplots

    drawn = [t for t in trials if t.user_attrs.get("history")]
    if not drawn:
        return None
    note = ""
    if len(drawn) > _MAX_CURVES:
        def rank(t: optuna.trial.FrozenTrial) -> tuple[bool, float]:
            value = t.values[0] if t.values else math.nan
            sign = -1.0 if spec.objectives[0].direction.value == "maximize" else 1.0
            return (not t.values, sign * value if t.values else 0.0)
        drawn = sorted(sorted(drawn, key=rank)[:_MAX_CURVES], key=lambda t: t.number)
        note = f" (the best {_MAX_CURVES} of {len(trials)} trials)"
    histories = [t.user_attrs["history"] for t in drawn]
    rows = metric_rows(histories, spec.objective.metric)
    epochs = max(len(v) for h in histories for v in h.values())

    def make() -> Any:
        titles = [f"{side} {m}" for m in rows for side in ("train", "validation")]
        fig = make_subplots(rows=len(rows), cols=2, subplot_titles=titles,
                            horizontal_spacing=0.08,
                            vertical_spacing=0.3 / len(rows))
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                   "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
        for i, (t, h) in enumerate(zip(drawn, histories, strict=True)):
            line = {"color": palette[i % len(palette)], "width": 3 if t.number == best else 1.5,
                    "dash": "dot" if t.state is optuna.trial.TrialState.PRUNED else "solid"}
            label = f"#{t.number} {t.state.name.lower()}" + (" (best)" if t.number == best
                                                            else "")
            shown = False
            for r, base in enumerate(rows, start=1):
                for c, key in enumerate((base, f"val_{base}"), start=1):
                    ys = h.get(key)
                    if not ys:
                        continue
                    fig.add_scatter(x=list(range(1, len(ys) + 1)), y=ys, mode="lines+markers",
                                    line=line, marker={"size": 4}, name=label,
                                    legendgroup=str(t.number), showlegend=not shown, row=r,
                                    col=c, hovertemplate=f"trial {t.number}<br>epoch %{{x}}"
                                    f"<br>{key} %{{y:.4g}}<extra></extra>")
                    shown = True
        fig.update_xaxes(title_text="epoch", tick0=1, dtick=max(1, math.ceil(epochs / 10)),
                         range=[0.8, epochs + 0.2])
        fig.update_layout(margin={"t": 40, "b": 40}, legend={"title": "trial (click to hide)"})
        return fig

    return f"Learning curves{note}", make
