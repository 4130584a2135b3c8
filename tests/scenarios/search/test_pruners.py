"""Every pruner by name, with settings, runs a short real sweep; bad combinations are refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from search_support import run

from clonesweep.errors import SpecError
from clonesweep.orchestrator import InProcessBackend, base_model_config, run_sweep
from clonesweep.orchestrator.study.plugins import make_pruner
from clonesweep.spec import load_sweep

# One hopeless learning rate, so that the pruners have something to stop.
PRUNABLE = """
  optimizer.learning_rate: {values: [0.000001, 0.01]}"""
ENQUEUED = """
enqueue:
  - {optimizer.learning_rate: 0.01}
  - {optimizer.learning_rate: 0.000001}"""

PRUNERS = {
    "median": ("{name: median, n_startup_trials: 1, n_warmup_steps: 0}",
               optuna.pruners.MedianPruner),
    "percentile": ("{name: percentile, percentile: 25.0, n_startup_trials: 1}",
                   optuna.pruners.PercentilePruner),
    "successive_halving": ("{name: successive_halving, min_resource: 1, reduction_factor: 2}",
                           optuna.pruners.SuccessiveHalvingPruner),
    "hyperband": ("{name: hyperband, min_resource: 1, reduction_factor: 2}",
                  optuna.pruners.HyperbandPruner),
    "threshold": ("{name: threshold, lower: 0.5}", optuna.pruners.ThresholdPruner),
    "patient": ("{name: patient, patience: 0, wrapped: {name: median, n_startup_trials: 1}}",
                optuna.pruners.PatientPruner),
    "wilcoxon": ("{name: wilcoxon, p_threshold: 0.5, n_startup_steps: 1}",
                 optuna.pruners.WilcoxonPruner),
    "none": ("none", optuna.pruners.NopPruner),
}


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_each_pruner_runs_a_short_sweep(sweep: Callable[..., Path], name: str) -> None:
    pruner, cls = PRUNERS[name]
    path = sweep(parameters=PRUNABLE, extra=ENQUEUED, epochs=3, trials=3,
                 sweep=f"sampler: random\n  pruner: {pruner}")
    spec, outcome, study = run(path)
    assert isinstance(make_pruner(spec), cls)
    assert outcome.counts.finished == 3 and outcome.counts.failed == 0, outcome.failures
    states = [t.state for t in study.get_trials()]
    if name in ("median", "threshold"):
        # The 1e-6 learning rate (trial 1) stays near chance after epoch 1: stopped early.
        hopeless = study.get_trials()[1]
        assert hopeless.params["optimizer.learning_rate"] == pytest.approx(1e-6)
        assert hopeless.state is optuna.trial.TrialState.PRUNED, states
        assert len(hopeless.user_attrs["history"]["loss"]) < 3
    if name == "none":
        assert optuna.trial.TrialState.PRUNED not in states


def test_patient_wraps_the_pruner_it_is_given(sweep: Callable[..., Path]) -> None:
    spec = load_sweep(sweep(sweep="pruner: {name: patient, patience: 2, wrapped: "
                                  "{name: percentile, percentile: 40.0}}"))
    pruner = make_pruner(spec)
    assert isinstance(pruner, optuna.pruners.PatientPruner)
    assert isinstance(pruner._wrapped_pruner, optuna.pruners.PercentilePruner)
    assert pruner._patience == 2


@pytest.mark.parametrize(("pruner", "expected"), [
    ("{name: patient, patience: 1, wrapped: {name: medain}}", "sweep.pruner.wrapped.name"),
    ("{name: patient, patience: 1, wrapped: {name: median, n_warmup: 1}}",
     "sweep.pruner.wrapped.n_warmup"),
    ("{name: patient, patience: 1, wrapped: none}", "sweep.pruner.wrapped"),
])
def test_bad_wrapped_pruners_are_refused(sweep: Callable[..., Path], pruner: str,
                                         expected: str) -> None:
    spec = load_sweep(sweep(sweep=f"pruner: {pruner}"))
    with pytest.raises(SpecError) as info:
        run_sweep(spec, base_model_config(spec), InProcessBackend())
    assert expected in str(info.value)
