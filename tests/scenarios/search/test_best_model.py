"""The kept best model is the study's answer: feasible under constraints, one per Pareto-front
trial with two objectives; when no worker holds it, the folder says so and repro rebuilds it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import keras
import pytest
from search_support import run

from clonesweep.cli.main import main
from clonesweep.orchestrator import InProcessBackend, base_model_config, run_sweep
from clonesweep.orchestrator.bestmodel import keep
from clonesweep.orchestrator.commands.report import best_payload
from clonesweep.orchestrator.runfolder import RunFolder
from clonesweep.orchestrator.sweep import RunOptions

UNITS = """
  layers.hidden.units: {values: [4, 64]}"""
# 64 inputs, 10 classes: 4 hidden units -> 310 weights, 64 -> 4,810. The big one is more
# accurate, but only the small one meets the constraint.
LIMIT = "constraints: [{metric: param_count, max: 1000}]"
BOTH = "enqueue: [{layers.hidden.units: 64}, {layers.hidden.units: 4}]"


def test_under_a_constraint_the_kept_model_is_the_best_feasible_one(
        sweep: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep(parameters=UNITS, trials=2, extra=f"{LIMIT}\n{BOTH}")
    spec, outcome, study = run(path)
    big, small = study.get_trials()
    assert big.value > small.value and study.best_trial.number == small.number
    summary = json.loads((spec.run_folder / "summary.json").read_text())
    assert summary["best_model"] == str(spec.run_folder / "best.keras")
    assert summary["best_model_hint"] is None
    assert keras.saving.load_model(outcome.best_model).count_params() == 310
    assert best_payload(spec)["best"]["model_file"] == summary["best_model"]

    # A second run (new workers, which never trained the first run's trials): the summary
    # and best.json still name the study's best, whether it changed or not.
    more = run_sweep(spec, base_model_config(spec), InProcessBackend(),
                     options=RunOptions(add_trials=1))
    best_now = study.best_trial.number
    assert more.best_model == spec.run_folder / "best.keras"
    assert json.loads((spec.run_folder / "best.json").read_text())["number"] == best_now
    summary = json.loads((spec.run_folder / "summary.json").read_text())
    assert summary["best_model"] == str(more.best_model) and summary["best"]["number"] == best_now

    # The worker that trained it is gone (a new backend holds no model) and the file on
    # disk is an older best's: it is moved to that trial's name, and nothing claims it.
    (spec.run_folder / "best.json").write_text(json.dumps({"number": big.number}))
    kept = keep(InProcessBackend(), RunFolder(spec.run_folder), study)
    assert kept.best_model is None and kept.missing == (best_now,)
    assert not (spec.run_folder / "best.keras").exists()
    assert (spec.run_folder / "trials" / f"{big.number:05d}.keras").exists()
    best = best_payload(spec)["best"]
    assert best["model_file"] is None
    assert f"clonesweep repro {spec.file} {best_now} --train" in best["model_hint"]

    # The hint's command retrains it, bitwise, and saves it.
    out = spec.run_folder.parent / "again.keras"
    assert main(["repro", str(path), str(best_now), "--save", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["saved"] == str(out)
    assert keras.saving.load_model(out).count_params() == 310


def test_with_two_objectives_each_front_trial_has_its_model(
        sweep: Callable[..., Path]) -> None:
    objective = ("[{metric: val_accuracy, direction: maximize}, "
                 "{metric: param_count, direction: minimize}]")
    path = sweep(objective=objective, parameters=UNITS, trials=3, extra=BOTH,
                 sweep="sampler: {name: nsga2, seed: 0}")
    spec, outcome, study = run(path)
    front = {t.number: t for t in study.best_trials}
    assert set(outcome.front_models) == set(front) and len(front) >= 2
    for number, model_path in outcome.front_models.items():
        model = keras.saving.load_model(model_path)
        assert model.count_params() == front[number].user_attrs["param_count"]
    summary = json.loads((spec.run_folder / "summary.json").read_text())
    assert summary["best_model"] is None  # no single best: see pareto_models
    assert {int(n) for n in summary["pareto_models"]} == set(front)
    payload = best_payload(spec)["best"]
    assert all(entry["model_file"] for entry in payload.values())
