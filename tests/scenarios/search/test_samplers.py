"""Every sampler by name, with settings, runs a short real sweep."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from search_support import run

from clonesweep.errors import SpecError
from clonesweep.orchestrator import InProcessBackend, base_model_config, run_sweep
from clonesweep.orchestrator.study.plugins import make_sampler
from clonesweep.spec import load_sweep

FINITE = """
  layers.hidden.units: {values: [8, 32]}
  optimizer.learning_rate: {values: [0.003, 0.01]}"""
NUMERIC = """
  layers.hidden.units: {min: 8, max: 64}
  optimizer.learning_rate: {min: 0.001, max: 0.01, log: true}"""

SAMPLERS = {
    "tpe": ("{name: tpe, seed: 1, n_startup_trials: 1, multivariate: true, group: true}",
            NUMERIC),
    "tpe-liar": ("{name: tpe, seed: 1, n_startup_trials: 1, constant_liar: true}", NUMERIC),
    "random": ("{name: random, seed: 1}", NUMERIC),
    "grid": ("{name: grid, seed: 1}", FINITE),
    "cmaes": ("{name: cmaes, seed: 1, n_startup_trials: 1, sigma0: 0.5}", NUMERIC),
    "nsga2": ("{name: nsga2, seed: 1, population_size: 2}", NUMERIC),
    "nsga3": ("{name: nsga3, seed: 1, population_size: 2}", NUMERIC),
    "qmc": ("{name: qmc, seed: 1, qmc_type: sobol, scramble: true}", NUMERIC),
    "bruteforce": ("{name: bruteforce, seed: 1}", FINITE),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_each_sampler_runs_a_short_sweep(sweep: Callable[..., Path], name: str) -> None:
    sampler, params = SAMPLERS[name]
    spec, outcome, study = run(sweep(parameters=params, sweep=f"sampler: {sampler}", trials=3))
    assert outcome.counts.complete == 3, outcome.failures
    trials = study.get_trials()
    assert all(t.state is optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(set(t.params) == {"layers.hidden.units", "optimizer.learning_rate"}
               for t in trials)
    assert type(make_sampler(spec)).__name__.lower().startswith(
        {"tpe-liar": "tpe", "nsga2": "nsgaii", "nsga3": "nsgaiii"}.get(name, name))
    if name in ("grid", "bruteforce"):  # a finite space: every trial a different point
        assert len({tuple(sorted(t.params.items())) for t in trials}) == 3


@pytest.mark.parametrize("name", ["grid", "bruteforce"])
def test_an_exhausted_grid_ends_the_sweep_early(sweep: Callable[..., Path], name: str) -> None:
    params = """
  layers.hidden.units: {values: [8, 16]}"""
    _spec, outcome, study = run(sweep(parameters=params, sweep=f"sampler: {name}", trials=5))
    assert outcome.counts.complete == 2
    assert sorted(t.params["layers.hidden.units"] for t in study.get_trials()) == [8, 16]


def test_gp_sampler_runs_or_says_what_to_install(sweep: Callable[..., Path]) -> None:
    path = sweep(parameters=NUMERIC, sweep="sampler: {name: gp, seed: 1, n_startup_trials: 1}")
    spec = load_sweep(path)
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(SpecError) as info:
            run_sweep(spec, base_model_config(spec), InProcessBackend())
        text = str(info.value)
        assert "sweep.sampler" in text and "PyTorch" in text and "pip install" in text
        assert not (path.parent / "runs").exists()
    else:
        _, outcome, _ = run(path)
        assert outcome.counts.complete == 3


def test_tpe_gets_constant_liar_with_parallel_workers(sweep: Callable[..., Path]) -> None:
    spec = load_sweep(sweep(sweep="sampler: tpe", parallel=3))
    assert make_sampler(spec)._constant_liar is True
    spec = load_sweep(sweep(sweep="sampler: {name: tpe, constant_liar: false}", parallel=3))
    assert make_sampler(spec)._constant_liar is False


def test_a_sampler_setting_typo_is_refused(sweep: Callable[..., Path]) -> None:
    spec = load_sweep(sweep(sweep="sampler: {name: nsga2, populaton_size: 4}"))
    with pytest.raises(SpecError, match="population_size"):
        run_sweep(spec, base_model_config(spec), InProcessBackend())
