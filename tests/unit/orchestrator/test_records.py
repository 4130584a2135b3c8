"""Which engine trained a trial, and why not a faster one, is stored on the trial for the live
table and ``status`` to show (attributes ``engine`` and ``engine_fallback``)."""

from __future__ import annotations

from typing import Any

from clonesweep.orchestrator import InProcessBackend, base_model_config, run_sweep
from clonesweep.orchestrator.commands.report import open_study_of
from clonesweep.spec import load_sweep


def test_engine_and_its_fallback_are_trial_attributes(sweep_file: Any) -> None:
    stop = "\n  callbacks: [{name: EarlyStopping, monitor: loss, min_delta: 10.0, patience: 0}]"
    spec = load_sweep(sweep_file(name="engines", trials=1, epochs=4, limit=200,
                                 training_extra=stop))
    outcome = run_sweep(spec, base_model_config(spec), InProcessBackend())
    assert outcome.counts.complete == 1
    (trial,) = open_study_of(spec).get_trials()
    assert trial.user_attrs["engine"] == "keras"
    assert trial.user_attrs["engine_fallback"] == (
        "graph: not_covered: training.callbacks are set (they need Keras's fit)")
    assert len(trial.user_attrs["history"]["loss"]) == 2  # EarlyStopping ended it


def test_a_trial_on_the_graph_engine_has_no_fallback(sweep_file: Any) -> None:
    spec = load_sweep(sweep_file(name="graph", trials=1, epochs=1, limit=200))
    run_sweep(spec, base_model_config(spec), InProcessBackend())
    (trial,) = open_study_of(spec).get_trials()
    assert trial.user_attrs["engine"] == "graph"
    assert trial.user_attrs["engine_fallback"] is None
