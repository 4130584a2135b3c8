"""A real sweep on a real local Ray cluster: 6 finished trials, pruned ones included."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from clonesweep.orchestrator import base_model_config, run_sweep
from clonesweep.orchestrator.backends.ray.backend import RayBackend
from clonesweep.orchestrator.study.storage import load_study, storage_url
from clonesweep.spec import load_sweep

pytestmark = pytest.mark.integration


def test_six_trial_sweep_on_ray(ray_cluster: str, sweep_file: Any) -> None:
    path = sweep_file(
        trials=6, parallel=2, epochs=3,
        parameters="""
  layers.hidden.units: {values: [8, 32]}
  optimizer.learning_rate: {values: [0.000001, 0.03]}""",
        sweep_extra="\n  pruner: {name: threshold, lower: 0.3, n_warmup_steps: 0}")
    spec = load_sweep(path)
    outcome = run_sweep(spec, base_model_config(spec), RayBackend(resources=spec.sweep.resources))
    study = load_study(spec.name, storage_url(spec))
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert len(trials) == 6 and all(s.is_finished() for s in states)
    assert optuna.trial.TrialState.PRUNED in states
    assert optuna.trial.TrialState.COMPLETE in states
    assert outcome.counts.finished == 6
    workers = {t.user_attrs["worker"] for t in trials}
    assert workers <= {"worker-0", "worker-1"} and len(workers) == 2
    assert all(t.user_attrs["node"] for t in trials)
    for t in trials:
        if t.state is optuna.trial.TrialState.PRUNED:
            assert t.params["optimizer.learning_rate"] == pytest.approx(1e-6)
            assert t.user_attrs["history"]["val_accuracy"]
    assert outcome.best_model is not None and outcome.best_model.exists()


def test_reports_without_a_pruner_do_not_wait_yet_every_epoch_is_recorded(
        ray_cluster: str, sweep_file: Any) -> None:
    spec = load_sweep(sweep_file(trials=2, parallel=2, epochs=3))
    assert spec.sweep.pruner.name == "none"
    outcome = run_sweep(spec, base_model_config(spec), RayBackend(resources=spec.sweep.resources))
    assert outcome.counts.complete == 2
    study = load_study(spec.name, storage_url(spec))
    for t in study.get_trials():
        history = t.user_attrs["history"]["val_accuracy"]
        assert len(history) == 3
        assert t.intermediate_values == dict(enumerate(history))


def test_resources_the_cluster_lacks_are_refused_before_anything_exists(
        ray_cluster: str, sweep_file: Any, tmp_path: Any) -> None:
    from clonesweep.errors import SweepFailed

    spec = load_sweep(sweep_file(sweep_extra="\n  resources: {cpu: 1, gpu: 0.5}"))
    with pytest.raises(SweepFailed, match=r"0\.5 GPU .* has 0 GPU"):
        run_sweep(spec, base_model_config(spec), RayBackend(resources=spec.sweep.resources))
    assert not (tmp_path / "runs").exists()
