"""``clonesweep report``: one self-contained HTML page per sweep, to read and to share.

The page holds, in order: the sweep's objective, counts and best trial (and, when no trial
completed, why, on top); a table of every trial, sortable by clicking a header (state,
value(s), params, epochs, duration, engine, fail reason); the failures with their messages;
train and validation learning curves from each trial's stored per-epoch history; Optuna's own
plots (optimization history or Pareto front, parallel coordinates, importances, slices,
contours, timeline), each replaced by a note when it does not apply; every ensemble of the
sweep with its members' spread; the best trial's config diff against the base model; the
versions the workers ran. Numbers show 4 significant digits. The page is one file that opens
offline: plotly.js is embedded once, and no figure at all is drawn when no trial trained.

Modules: :mod:`.page` (the order, the style, the sorting script), :mod:`.trials` (what the
trials' records say), :mod:`.plots` (figures), :mod:`.ensembles`, :mod:`.cells` (numbers
and tables).
"""

from clonesweep.orchestrator.commands.report_html.page import render_report

__all__ = ["render_report"]
