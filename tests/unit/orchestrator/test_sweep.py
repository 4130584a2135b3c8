"""The sweep loop on the in-process backend: storage, attributes, pruning, run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from clonesweep.errors import SpecError, SweepFailed
from clonesweep.orchestrator import InProcessBackend, base_model_config, run_sweep
from clonesweep.orchestrator.study.storage import load_study, mask_url, storage_url
from clonesweep.spec import load_sweep

PRUNABLE = """
  optimizer.learning_rate: {values: [0.000001, 0.03]}"""


def sweep(path: Path) -> Any:
    spec = load_sweep(path)
    return spec, run_sweep(spec, base_model_config(spec), InProcessBackend())


def test_sweep_fills_the_study_and_the_run_folder(sweep_file: Any) -> None:
    spec, outcome = sweep(sweep_file(trials=3, epochs=2))
    study = load_study(spec.name, storage_url(spec))
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state.is_finished() for t in trials)
    for t in trials:
        for key in ("seed", "seeds", "config_hash", "node", "worker", "build_s", "train_s",
                    "eval_s", "param_count", "history", "state"):
            assert key in t.user_attrs, key
        assert set(t.params) == {"layers.hidden.units", "optimizer.learning_rate"}
        # No pruner: reports do not wait for the driver, yet every epoch is recorded.
        assert t.intermediate_values == dict(enumerate(t.user_attrs["history"]["val_accuracy"]))
        record = json.loads((spec.run_folder / "trials" / f"{t.number:05d}.json").read_text())
        assert record["config_hash"] == t.user_attrs["config_hash"]
        units = record["config"]["config"]["layers"][1]["config"]["units"]
        assert units == t.params["layers.hidden.units"]
    assert outcome.best is not None and outcome.best.number == study.best_trial.number
    assert (spec.run_folder / "study.log").exists()  # the default storage: a journal
    assert (spec.run_folder / "base_config.json").exists()
    summary = json.loads((spec.run_folder / "summary.json").read_text())
    assert summary["complete"] == 3 and summary["best"]["number"] == outcome.best.number
    import keras

    model = keras.saving.load_model(outcome.best_model, safe_mode=True)
    assert model.count_params() == study.best_trial.user_attrs["param_count"]


def test_median_pruner_stops_hopeless_trials(sweep_file: Any) -> None:
    path = sweep_file(trials=5, epochs=3, parameters=PRUNABLE,
                      sweep_extra="\n  pruner: {name: median, n_startup_trials: 1, "
                                  "n_warmup_steps: 0}")
    spec, outcome = sweep(path)
    study = load_study(spec.name, storage_url(spec))
    pruned = [t for t in study.get_trials() if t.state is optuna.trial.TrialState.PRUNED]
    assert outcome.counts.finished == 5
    hopeless = [t for t in pruned if t.params["optimizer.learning_rate"] == pytest.approx(1e-6)]
    assert hopeless, "a trial with learning rate 1e-6 should have been pruned"
    for t in pruned:
        assert t.intermediate_values, "pruned trials keep their intermediate values"
        assert len(t.user_attrs["history"]["loss"]) < 3, "pruned before its last epoch"


def test_hyperband_pruner_runs_to_the_budget(sweep_file: Any) -> None:
    path = sweep_file(trials=3, epochs=3, parameters=PRUNABLE,
                      sweep_extra="\n  pruner: {name: hyperband, min_resource: 1}")
    _, outcome = sweep(path)
    assert outcome.counts.finished == 3


def test_a_second_run_continues_the_same_study_to_a_larger_budget(sweep_file: Any) -> None:
    spec, first = sweep(sweep_file(trials=2, epochs=1))
    _, second = sweep(sweep_file(trials=3, epochs=1))
    assert first.counts.finished == 2 and second.counts.finished == 1
    study = load_study(spec.name, storage_url(spec))
    assert len(study.get_trials()) == 3


def test_bad_sampler_setting_creates_nothing(sweep_file: Any, tmp_path: Path) -> None:
    path = sweep_file(sweep_extra="\n  pruner: {name: median, n_startup_trails: 1}")
    spec = load_sweep(path)
    with pytest.raises(SpecError) as info:
        run_sweep(spec, base_model_config(spec), InProcessBackend())
    text = str(info.value)
    assert "sweep.pruner.n_startup_trails" in text and "n_startup_trials" in text
    assert not (tmp_path / "runs").exists()


def test_broken_data_loader_stops_the_sweep(sweep_file: Any, tmp_path: Path) -> None:
    path = sweep_file(trials=6, loader="clonesweep.datasets:no_such_loader")
    spec = load_sweep(path)
    with pytest.raises(SweepFailed, match="no_such_loader"):
        run_sweep(spec, base_model_config(spec), InProcessBackend())
    study = load_study(spec.name, storage_url(spec))
    assert len(study.get_trials()) == 3
    assert {t.user_attrs["fail_reason"] for t in study.get_trials()} == {"user_error"}


def test_mask_url_hides_passwords() -> None:
    url = "postgresql://sweeper:s3cr3t@db.internal:5432/studies"
    assert "s3cr3t" not in mask_url(url)
    assert mask_url(url) == "postgresql://sweeper:***@db.internal:5432/studies"


def test_resuming_with_another_search_space_is_refused(sweep_file: Any) -> None:
    sweep(sweep_file(trials=1, epochs=1))
    changed = sweep_file(trials=2, epochs=1, parameters="""
  layers.hidden.units: {values: [8, 32]}
  optimizer.learning_rate: {min: 0.001, max: 0.01, log: true}""")
    spec = load_sweep(changed)
    with pytest.raises(SpecError, match=r"parameters\.layers\.hidden\.units"):
        run_sweep(spec, base_model_config(spec), InProcessBackend())
    study = load_study(spec.name, storage_url(spec))
    assert len(study.get_trials()) == 1
