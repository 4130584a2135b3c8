"""The page: its parts in reading order, the style, and the table-sorting script.

Order: what the sweep is and how it went (with, when no trial completed, why, on top), the
table of all trials, failures, learning curves, Optuna's plots, the ensembles, the best
trial's config diff, the environment. plotly.js is embedded once in the head, and only when
the page draws a figure, so an all-failed sweep's page stays a few kilobytes.
"""

from __future__ import annotations

import html
from importlib.metadata import PackageNotFoundError, version

import optuna

from clonesweep.orchestrator.commands.inspect import trial_diff
from clonesweep.orchestrator.commands.report_html import ensembles as ens_part
from clonesweep.orchestrator.commands.report_html import plots, trials
from clonesweep.orchestrator.commands.report_html.cells import cell, definitions, fmt, table
from clonesweep.orchestrator.trialrecord import read_in
from clonesweep.spec.model import SweepSpec

__all__ = ["render_report"]

State = optuna.trial.TrialState

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:14px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
td[data-v]{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f3f3f3;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
table.facts th{background:#f8f8f8;font-weight:normal;color:#555}
.scroll{max-height:520px;overflow:auto}
.state-complete{color:#176417}.state-pruned{color:#8a6d00}.state-fail{color:#a00}
.alert{background:#fde8e8;border:1px solid #d88;padding:1em;border-radius:6px}
.skipped{color:#a00}pre{white-space:pre-wrap;font-size:12px;max-width:1100px}
details summary{cursor:pointer}nav a{margin-right:1em}
"""

# Click a header to sort by that column; click again to reverse. Numbers sort by data-v.
_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('thead th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var asc=th.getAttribute('aria-sort')!=='ascending';
      t.querySelectorAll('thead th').forEach(function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort',asc?'ascending':'descending');
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      function key(r){var c=r.cells[i],v=c&&c.getAttribute('data-v');
        return v===null||v===undefined?[1,c?c.textContent:'']:[0,parseFloat(v)];}
      rows.sort(function(a,b){var x=key(a),y=key(b);
        if(x[0]!==y[0])return x[0]-y[0];
        var d=x[0]===0?x[1]-y[1]:x[1].localeCompare(y[1]);return asc?d:-d;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def _versions() -> dict[str, str]:
    found = {}
    for name in ("clonesweep", "optuna", "plotly"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    if len(study.directions) > 1:
        return None  # no single best: the Pareto front plot shows them
    try:
        return study.best_trial
    except ValueError:  # no complete (feasible) trial
        return None


def _summary(spec: SweepSpec, study: optuna.Study, all_trials: list[optuna.trial.FrozenTrial],
             best: optuna.trial.FrozenTrial | None) -> str:
    counts = {s.name.lower(): sum(t.state is s for t in all_trials) for s in State}
    said = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    rows: list[tuple[str, object]] = [
        ("objective", "; ".join(f"{o.direction.value} {o.metric}" for o in spec.objectives)),
        ("trials", f"{len(all_trials)} ({said})" if all_trials else "none yet"),
    ]
    if best is not None:
        rows.append(("best trial", f"#{best.number}: {spec.objective.metric} = "
                                   f"{fmt(best.value)}"))
        # What the best trial trained, conditional (otherwise) values included.
        rows.extend((f"best {k}", fmt(v))
                    for k, v in read_in(study, best, spec.parameters).applied.items())
    if spec.is_multi_objective and any(t.state is State.COMPLETE for t in all_trials):
        front = sorted(study.best_trials, key=lambda t: t.number)
        rows.append(("Pareto front", "; ".join(
            f"#{t.number}: " + ", ".join(f"{o.metric} = {fmt(v)}"
                                         for o, v in zip(spec.objectives, t.values, strict=True))
            for t in front)))
    if study.user_attrs.get("fixed_params"):
        rows.append(("constant params", ", ".join(
            f"{k}={fmt(v)}" for k, v in study.user_attrs["fixed_params"].items())))
    return definitions(rows)


def _section(title: str, body: str, anchor: str) -> str:
    return f'<h2 id="{anchor}">{html.escape(title)}</h2>{body}'


_ANCHORS = {"trials": "trials", "failures": "failures", "curves": "learning curves",
            "plots": "search", "ensembles": "ensembles", "best": "best trial",
            "environment": "environment"}


def _nav(parts: list[str]) -> str:
    """Links to the sections the page has."""
    text = "".join(parts)
    links = [f'<a href="#{a}">{t}</a>' for a, t in _ANCHORS.items() if f'id="{a}"' in text]
    return f"<nav>{''.join(links)}</nav>"


def _plot(title: str, body: str) -> str:
    return f'<section class="plot"><h3>{html.escape(title)}</h3>{body}</section>'


def _curves_part(spec: SweepSpec, all_trials: list[optuna.trial.FrozenTrial],
                 best: optuna.trial.FrozenTrial | None) -> str:
    curves = plots.learning_curves(spec, all_trials, best.number if best else None)
    if curves is None:
        return ""
    title, make = curves
    rows = len(plots.metric_rows([t.user_attrs.get("history") or {} for t in all_trials],
                                 spec.objective.metric))
    return f'<h2 id="curves">{html.escape(title)}</h2>' + _plot(
        "train and validation, per epoch (thick: the best trial; dotted: pruned)",
        plots.figure_html(make, height=60 + 300 * max(rows, 1)))


def _ensembles_part(spec: SweepSpec, study: optuna.Study) -> str:
    found = ens_part.find_ensembles(spec, study)
    if not found:
        return ""
    parts = [f'<h2 id="ensembles">Ensembles ({len(found)})</h2>']
    if any(e.values for e in found):
        parts.append(_plot("Members' spread against each ensemble",
                           plots.figure_html(ens_part.spread_figure(spec, found), 420)))
    return "".join(parts + [ens_part.ensemble_parts(e) for e in found])


def render_report(spec: SweepSpec, study: optuna.Study) -> str:
    """The HTML page for the sweep's study and its ensembles (see the module docstring)."""
    all_trials = study.get_trials(deepcopy=False)
    best = _best(study)
    parts = [f"<h1>Sweep {html.escape(spec.name)}</h1>", trials.all_failed_banner(all_trials),
             _summary(spec, study, all_trials, best)]
    if all_trials:
        parts.append(_section(f"All trials ({len(all_trials)}; click a header to sort)",
                              f'<div class="scroll">{trials.trials_table(spec, all_trials)}'
                              "</div>", "trials"))
    parts += [trials.failures_part(all_trials), _curves_part(spec, all_trials, best)]
    if any(t.state is State.COMPLETE for t in all_trials):
        # Optuna's plots of a sweep with no completed trial are empty axes: not drawn.
        parts.append('<h2 id="plots">Search</h2>')
        parts.extend(_plot(title, plots.figure_html(make, height))
                     for title, make, height in plots.optuna_plots(spec, study))
    parts.append(_ensembles_part(spec, study))
    if best is not None:
        changes = trial_diff(spec, study, best.number)
        parts.append(_section(f"Best trial #{best.number} against the base model", table(
            ["path", "base", f"trial {best.number}"],
            [[cell(c.path), cell(c.before), cell(c.after)] for c in changes]), "best"))
    parts.append(trials.environment_part(all_trials, _versions()))
    parts.insert(3, _nav(parts))
    body = "\n".join(p for p in parts if p)
    plotly_js = ""
    if "Plotly.newPlot" in body:  # the library once, and only for a page with figures
        from plotly.offline import get_plotlyjs

        plotly_js = f"<script>{get_plotlyjs()}</script>"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>clonesweep: "
            f"{html.escape(spec.name)}</title><style>{_STYLE}</style>{plotly_js}</head><body>"
            + body + f"<script>{_SORT_JS}</script></body></html>")
