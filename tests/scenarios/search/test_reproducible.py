"""Every finished trial can be rebuilt, and retrained bitwise, from the study alone.

One property over every kind of search space (plain, conditional with ``when`` /
``otherwise`` / ``switch.*`` / chained conditions, structural ``model.*``, enqueued trials):
each finished trial's record rebuilds to the config hash its worker stored, and ``repro
--train`` of a COMPLETE and a PRUNED trial gives bitwise the same history and value on CPU.
The sweep files are written here, not taken from configs/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from search_support import run

from clonesweep.orchestrator import base_model_config, run_sweep
from clonesweep.orchestrator.backends.ray.backend import RayBackend
from clonesweep.orchestrator.commands.inspect import stored_trial, trial_diff
from clonesweep.orchestrator.commands.repro import reproduce
from clonesweep.orchestrator.study.storage import load_study, storage_url
from clonesweep.orchestrator.trialrecord import read_in
from clonesweep.spec import load_sweep

S = optuna.trial.TrialState
# A pruner that prunes after epoch 0 whenever val_accuracy is below 0.3: tiny trials on 300
# digits give both outcomes.
PRUNER = "pruner: {name: threshold, lower: 0.3}"

SPACES = {
    "plain": ("""
  layers.hidden.units: {values: [8, 32]}
  layers.drop.rate: {min: 0.0, max: 0.3}
  optimizer.learning_rate: {min: 0.001, max: 0.05, log: true}
  train.batch_size: {values: [32, 64]}""", "", "config: model.json"),
    "conditional": ("""
  switch.dropout: {values: [true, false]}
  layers.drop.rate: {min: 0.1, max: 0.4, when: {switch.dropout: true}, otherwise: 0.0}
  layers.hidden.units: {values: [8, 16, 32], when: {switch.dropout: true}, otherwise: 24}
  layers.hidden.activation: {values: [relu, tanh], when: {layers.hidden.units: [16, 32]},
                             otherwise: sigmoid}
  optimizer.learning_rate: {value: 0.02, when: {switch.dropout: false}}""",
                    "enqueue: [{switch.dropout: false}, {switch.dropout: true, "
                    "layers.hidden.units: 16, layers.hidden.activation: tanh}]",
                    "config: model.json"),
    "structural": ("""
  model.blocks: {values: [1, 2]}
  model.dropout: {values: [true, false]}
  layers.block0.units: {values: [8, 16]}
  layers.drop.rate: {min: 0.1, max: 0.4, when: {model.dropout: true}}
  optimizer.learning_rate: {min: 0.001, max: 0.05, log: true}""",
                   "enqueue: [{model.blocks: 2, model.dropout: true}]",
                   "factory: clonesweep.examples.factories:digits_blocks"),
    "enqueued": ("""
  layers.hidden.units: {values: [8, 32]}
  optimizer.learning_rate: {min: 0.0001, max: 0.05, log: true}""",
                 "enqueue: [{layers.hidden.units: 8, optimizer.learning_rate: 0.0001}, "
                 "{layers.hidden.units: 32, optimizer.learning_rate: 0.03}]",
                 "config: model.json"),
}


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_every_trial_rebuilds_and_a_sample_retrains_bitwise(
        sweep: Callable[..., Path], kind: str) -> None:
    parameters, extra, model = SPACES[kind]
    path = sweep(name=kind, parameters=parameters, extra=extra, model=model, trials=5,
                 epochs=3, limit=600, sweep=f"sampler: {{name: random, seed: 4}}\n  {PRUNER}")
    spec, outcome, study = run(path)
    finished = [t for t in study.get_trials() if t.state in (S.COMPLETE, S.PRUNED)]
    assert len(finished) == 5, outcome.failures
    for t in finished:
        stored = stored_trial(study, t.number, parameters=spec.parameters)
        assert not stored.record.legacy
        assert stored.materialized.config_hash == t.user_attrs["config_hash"], t.number
        # The run folder's record holds the same applied values as the study's.
        on_disk = json.loads((spec.run_folder / "trials" / f"{t.number:05d}.json").read_text())
        assert on_disk["params"] == dict(stored.record.applied)
    sample = [next(t for t in finished if t.state is state) for state in (S.COMPLETE, S.PRUNED)]
    for t in sample:
        report = reproduce(spec, study, t.number, train=True)
        assert report.ok, report.as_dict()
        assert report.value == report.stored_value and report.history_match


@pytest.mark.integration
def test_on_ray_a_conditional_sweep_rebuilds_and_retrains_bitwise(
        ray_cluster: str, sweep: Callable[..., Path]) -> None:
    """The same property with trials trained by Ray workers, retrained by `clonesweep repro`
    in a fresh process."""
    parameters, extra, _ = SPACES["conditional"]
    path = sweep(name="onray", parameters=parameters, extra=extra, trials=4, parallel=2,
                 epochs=3, limit=600, sweep=f"sampler: {{name: random, seed: 4}}\n  {PRUNER}")
    spec = load_sweep(path)
    run_sweep(spec, base_model_config(spec), RayBackend(resources=spec.sweep.resources))
    study = load_study(spec.name, storage_url(spec))
    finished = [t for t in study.get_trials() if t.state in (S.COMPLETE, S.PRUNED)]
    assert len(finished) == 4
    for t in finished:
        stored = stored_trial(study, t.number, parameters=spec.parameters)
        assert stored.materialized.config_hash == t.user_attrs["config_hash"], t.number
    off = next(t for t in finished if t.params["switch.dropout"] is False)  # enqueued first
    done = subprocess.run([sys.executable, "-m", "clonesweep", "repro", str(path),
                           str(off.number), "--train", "--json"], cwd=path.parent,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["ok"] and report["value"] == report["stored_value"]


def test_otherwise_values_are_recorded_diffed_and_reproduced(
        sweep: Callable[..., Path]) -> None:
    """The defect: a switched-off trial trained with `otherwise` but was rebuilt without it."""
    parameters, extra, _ = SPACES["conditional"]
    path = sweep(name="otherwise", parameters=parameters, extra=extra, trials=2)
    spec, _, study = run(path)
    off = study.get_trials()[0]  # enqueued with the switch off
    record = read_in(study, off, spec.parameters)
    assert record.applied == {"switch.dropout": False, "layers.drop.rate": 0.0,
                              "layers.hidden.units": 24, "layers.hidden.activation": "sigmoid",
                              "optimizer.learning_rate": 0.02}
    assert reproduce(spec, study, off.number).hash_match
    changes = {c.path: (c.before, c.after) for c in trial_diff(spec, study, off.number)}
    assert changes["layers.drop.rate"][1] == 0.0
    assert changes["layers.hidden.units"] == (64, 24)
    assert changes["layers.hidden.activation"] == ("relu", "sigmoid")
    on = study.get_trials()[1]
    between = {c.path: (c.before, c.after) for c in trial_diff(spec, study, off.number,
                                                                on.number)}
    assert between["switch.dropout"] == (True, False)
    assert between["layers.drop.rate"][1] == 0.0  # not trial 1's sampled rate


def test_an_old_study_without_the_record_is_replayed_from_the_file(
        sweep: Callable[..., Path]) -> None:
    parameters, extra, _ = SPACES["conditional"]
    path = sweep(name="legacy", parameters=parameters, extra=extra, trials=1)
    spec, _, study = run(path)
    trial = study.get_trials()[0]
    stored = dict(trial.user_attrs)
    del stored["applied"]
    old = optuna.trial.create_trial(params=trial.params, distributions=trial.distributions,
                                    user_attrs=stored, value=0.0)
    record = read_in(study, old, spec.parameters)
    assert record.legacy and record.applied == read_in(study, trial).applied


def test_repro_retrains_on_the_backend_the_trial_trained_on(
        sweep: Callable[..., Path]) -> None:
    """A trial trained on JAX (packed trials, fused members, `KERAS_BACKEND=jax` sweeps) is
    retrained on JAX by `clonesweep repro`, whose own Keras would be TensorFlow: before, it
    said NOT reproduced for every such trial. `KERAS_BACKEND` set by the user still wins."""
    parameters, _, model = SPACES["plain"]
    path = sweep(name="onjax", parameters=parameters, model=model, trials=1, epochs=2,
                 limit=300, sweep="sampler: {name: random, seed: 4}")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "clonesweep", *args],
                              cwd=path.parent, env={**env, **extra}, capture_output=True,
                              text=True, timeout=300)

    done = cli("run", str(path), "--backend", "inprocess", KERAS_BACKEND="jax")
    assert done.returncode == 0, done.stderr[-2000:]
    study = load_study(load_sweep(path).name, storage_url(load_sweep(path)))
    assert study.trials[0].user_attrs["environment"]["keras_backend"] == "jax"
    done = cli("repro", str(path), "0", "--train", "--json")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["ok"] and report["history_match"], report
    assert "keras_backend" not in report["environment_diff"], report
    done = cli("repro", str(path), "0", "--json", KERAS_BACKEND="tensorflow")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert json.loads(done.stdout)["environment_diff"]["keras_backend"] == ["jax", "tensorflow"]
