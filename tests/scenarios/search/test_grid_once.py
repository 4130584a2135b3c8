"""Grid and brute-force sweeps run each point exactly once, whatever the parallelism."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from search_support import run

from clonesweep.orchestrator import InProcessBackend, base_model_config, run_sweep
from clonesweep.orchestrator.trialrecord import read_in

PLAIN = """
  layers.hidden.units: {values: [8, 16, 32]}
  train.batch_size: {values: [32, 64]}"""
# 6 distinct configurations: dropout on (2 rates x 2 widths) or off (otherwise 0.0, 2 widths),
# although the keys' product has 8 grid ids.
CONDITIONAL = """
  switch.dropout: {values: [true, false]}
  layers.drop.rate: {values: [0.1, 0.3], when: {switch.dropout: true}, otherwise: 0.0}
  layers.hidden.units: {values: [8, 16]}"""


@pytest.mark.parametrize(("sampler", "space", "parallel"), [
    ("grid", PLAIN, 2), ("grid", PLAIN, 4), ("grid", CONDITIONAL, 2), ("grid", CONDITIONAL, 4),
    ("bruteforce", PLAIN, 4), ("bruteforce", CONDITIONAL, 2),
], ids=["grid-plain-2", "grid-plain-4", "grid-conditional-2", "grid-conditional-4",
        "bruteforce-plain-4", "bruteforce-conditional-2"])
def test_each_point_runs_once_and_the_sweep_says_the_grid_is_exhausted(
        sweep: Callable[..., Path], sampler: str, space: str, parallel: int) -> None:
    path = sweep(parameters=space, trials=10, parallel=parallel,
                 sweep=f"sampler: {{name: {sampler}}}")
    spec, outcome, study = run(path)
    trials = study.get_trials()
    assert len(trials) == 6 and outcome.counts.complete == 6, outcome
    configs = {json.dumps(read_in(study, t).config_params, sort_keys=True) for t in trials}
    assert len(configs) == 6
    assert "grid exhausted" in outcome.note
    summary = json.loads((spec.run_folder / "summary.json").read_text())
    assert "grid exhausted" in summary["note"]
    # Run again: nothing is left, nothing is asked.
    again = run_sweep(spec, base_model_config(spec), InProcessBackend())
    assert again.counts.finished == 0 and "grid exhausted" in again.note
    assert len(optuna.load_study(study_name=spec.name, storage=study._storage)
               .get_trials()) == 6


def test_a_grid_cut_short_by_its_budget_leaves_no_note(sweep: Callable[..., Path]) -> None:
    path = sweep(parameters=PLAIN, trials=4, parallel=2, sweep="sampler: {name: grid}")
    _, outcome, study = run(path)
    assert len(study.get_trials()) == 4 and outcome.note == ""
    assert len({tuple(sorted(t.params.items())) for t in study.get_trials()}) == 4
