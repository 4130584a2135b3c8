"""Multi-objective sweeps: several metrics with directions, the Pareto front in ``best``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from search_support import run

from clonesweep.cli.main import main
from clonesweep.errors import SpecError
from clonesweep.orchestrator.commands.report import best_payload, status_payload
from clonesweep.spec import load_sweep

TWO = """
  - {metric: val_accuracy, direction: maximize}
  - {metric: param_count, direction: minimize}"""
UNITS = """
  layers.hidden.units: {values: [4, 8, 64]}"""


def dominates(a: list[float], b: list[float], signs: list[float]) -> bool:
    """``a`` dominates ``b`` (signs: +1 maximize, -1 minimize)."""
    pairs = [(s * x, s * y) for s, x, y in zip(signs, a, b, strict=True)]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_the_pareto_front_is_non_dominated(sweep: Callable[..., Path], sampler: str) -> None:
    path = sweep(objective=TWO, parameters=UNITS, trials=4,
                 sweep=f"sampler: {{name: {sampler}, seed: 0}}",
                 extra="enqueue: [{layers.hidden.units: 4}, {layers.hidden.units: 64}]")
    spec, outcome, study = run(path)
    assert outcome.counts.complete == 4
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    for t in complete:
        assert t.values[1] == t.user_attrs["param_count"]
        assert t.values[0] == t.user_attrs["history"]["val_accuracy"][-1]
    front = study.best_trials
    signs = [1.0, -1.0]
    assert front
    for a in front:
        assert not any(dominates(b.values, a.values, signs) for b in complete)
    for t in complete:
        if t.number not in {f.number for f in front}:
            assert any(dominates(f.values, t.values, signs) for f in front)
    payload = best_payload(spec)
    assert sorted(payload["pareto_front"]) == sorted(t.number for t in front)
    entry = payload["best"][f"trial {front[0].number}"]
    assert {"val_accuracy", "param_count", "params", "seed", "config_file"} <= set(entry)
    assert status_payload(spec)["pareto_front_size"] == len(front)


def test_inference_latency_is_measured_and_optimized(sweep: Callable[..., Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    objective = TWO.replace("param_count", "inference_latency_ms")
    path = sweep(objective=objective, parameters=UNITS, trials=2, sweep="sampler: nsga2")
    _spec, outcome, study = run(path)
    assert outcome.counts.complete == 2
    for t in study.get_trials():
        latency = t.user_attrs["inference_latency_ms"]
        assert latency > 0 and t.values[1] == latency
    assert main(["best", str(path)]) == 0
    out = capsys.readouterr().out
    assert "pareto_front" in out and "inference_latency_ms" in out


def test_a_single_special_metric_objective(sweep: Callable[..., Path]) -> None:
    path = sweep(objective="{metric: param_count, direction: minimize}", parameters=UNITS,
                 trials=2, extra="enqueue: [{layers.hidden.units: 64}, {layers.hidden.units: 4}]")
    _spec, _outcome, study = run(path)
    assert study.best_trial.params["layers.hidden.units"] == 4
    assert study.best_trial.value == study.best_trial.user_attrs["param_count"]


@pytest.mark.parametrize(("sweep_block", "field"), [
    ("pruner: median", "sweep.pruner"),
    ("sampler: cmaes", "sweep.sampler"),
])
def test_pruning_or_cmaes_with_several_objectives_is_refused(
        sweep: Callable[..., Path], sweep_block: str, field: str) -> None:
    with pytest.raises(SpecError) as info:
        load_sweep(sweep(objective=TWO, sweep=sweep_block))
    assert field in str(info.value)


def test_pruning_a_measured_objective_is_refused(sweep: Callable[..., Path]) -> None:
    with pytest.raises(SpecError, match="only measured once training is over"):
        load_sweep(sweep(objective="{metric: param_count, direction: min}",
                         sweep="pruner: median"))


@pytest.mark.parametrize(("objective", "message"), [
    ("[]", "non-empty list"),
    ("[{metric: val_accuracy}, {metric: val_accuracy, direction: min}]", "same metric twice"),
    ("[{metric: val_accurcy}]", "not among the logged metrics"),
    ("[{metric: param_count, direction: down}]", "maximize or minimize"),
])
def test_bad_objective_lists(sweep: Callable[..., Path], objective: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_sweep(sweep(objective=objective))
