"""Structural search: ``model.<argument>`` params pick the factory's structure per trial."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from search_support import run

from clonesweep.errors import SpecError
from clonesweep.orchestrator import base_model_config
from clonesweep.spec import DataSpec, ObjectiveSpec, TrainingSpec, load_sweep
from clonesweep.trials import FailReason, TrialSpec, TrialState
from clonesweep.workers.materialize import canonical_hash
from clonesweep.workers.runner import TrialRunner, WorkerJob
from tests_support import CONFIGS

FACTORY = "factory: clonesweep.examples.factories:digits_blocks"
STRUCTURAL = """
  model.blocks: {values: [1, 2, 3]}
  model.dropout: {values: [true, false]}
  layers.block0.units: {values: [8, 16]}
  layers.block2.units: {values: [12, 24], when: {model.blocks: 3}}
  layers.drop.rate: {min: 0.1, max: 0.4, when: {model.dropout: true}}"""
ENQUEUE = """enqueue:
  - {model.blocks: 3, model.dropout: true}
  - {model.blocks: 1, model.dropout: false}
  - {model.blocks: 3, model.dropout: false}"""


def _layers(record: dict) -> dict[str, dict]:
    return {lay["config"]["name"]: lay["config"] for lay in record["config"]["config"]["layers"]}


def test_factory_params_make_distinct_structures(sweep: Callable[..., Path]) -> None:
    path = sweep(model=FACTORY, parameters=STRUCTURAL, trials=4, extra=ENQUEUE)
    spec, outcome, study = run(path)
    assert outcome.counts.complete == 4, outcome.failures
    structures = set()
    for t in study.get_trials():
        record = json.loads((spec.run_folder / "trials" / f"{t.number:05d}.json").read_text())
        layers = _layers(record)
        blocks = t.params["model.blocks"]
        assert [n for n in layers if n.startswith("block")] == [f"block{i}"
                                                              for i in range(blocks)]
        assert ("drop" in layers) is t.params["model.dropout"]
        # Config-path params apply on top of the structure.
        assert layers["block0"]["units"] == t.params["layers.block0.units"]
        if blocks == 3:
            assert layers["block2"]["units"] == t.params["layers.block2.units"]
        else:
            assert "layers.block2.units" not in t.params
        structures.add((blocks, t.params["model.dropout"]))
    assert len(structures) >= 3
    # Each structure's base config is kept once in the study, named by its hash.
    for t in study.get_trials():
        stored = json.loads(study.user_attrs[f"structure_config:{t.user_attrs['structure']}"])
        assert canonical_hash(stored) == t.user_attrs["structure"]
        assert stored["config"]["name"] == f"digits_blocks_{t.params['model.blocks']}"
    # The base structure (first choices) is what the run folder keeps.
    base = json.loads((spec.run_folder / "base_config.json").read_text())
    assert base["config"]["name"] == "digits_blocks_1"


def test_a_layer_key_missing_from_a_structure_fails_that_trial(
        sweep: Callable[..., Path]) -> None:
    parameters = """
  model.blocks: {values: [2, 1]}
  layers.block1.units: {values: [8, 16]}"""
    path = sweep(model=FACTORY, parameters=parameters, trials=2,
                 extra="enqueue: [{model.blocks: 2}, {model.blocks: 1}]")
    _spec, _outcome, study = run(path)
    ok, bad = study.get_trials()
    assert ok.state is optuna.trial.TrialState.COMPLETE
    assert bad.state is optuna.trial.TrialState.FAIL
    assert bad.user_attrs["fail_reason"] == "invalid_config"
    assert "block1" in bad.user_attrs["message"] and "blocks=1" in bad.user_attrs["message"]


def test_a_factory_that_refuses_its_arguments_fails_the_trial(
        sweep: Callable[..., Path]) -> None:
    path = sweep(model=FACTORY, parameters="""
  model.width: {values: [8, 0]}""", trials=2,
                 extra="enqueue: [{model.width: 8}, {model.width: 0}]")
    _spec, _outcome, study = run(path)
    ok, bad = study.get_trials()
    assert ok.state is optuna.trial.TrialState.COMPLETE
    assert bad.state is optuna.trial.TrialState.FAIL
    assert bad.user_attrs["fail_reason"] == "invalid_config"
    assert "width=0" in bad.user_attrs["message"] or "units=0" in bad.user_attrs["message"]


def test_unconditional_layer_keys_are_checked_against_the_base_structure(
        sweep: Callable[..., Path]) -> None:
    spec = load_sweep(sweep(model=FACTORY, parameters="""
  model.blocks: {values: [1, 2]}
  layers.blok0.units: {values: [8, 16]}"""))
    with pytest.raises(SpecError, match="blok0"):
        base_model_config(spec)


class _Never:
    def report(self, step: int, value: float) -> bool:
        return False


def test_a_worker_parses_each_structure_once() -> None:
    import keras

    from clonesweep.examples.factories import digits_blocks

    config = json.loads(json.dumps(keras.saving.serialize_keras_object(digits_blocks(3))))
    key = canonical_hash(config)
    job = WorkerJob(base_config_json=(CONFIGS / "digits_mlp.json").read_text(), imports=(),
                    data=DataSpec("clonesweep.datasets:digits", {"limit": 200}),
                    training=TrainingSpec(epochs=1), objective=ObjectiveSpec(),
                    keep_best=False)
    runner = TrialRunner(job)
    first = runner.run(TrialSpec(0, {}, 1, structure=key,
                                 structure_config_json=json.dumps(config)), _Never())
    again = runner.run(TrialSpec(1, {"layers.block2.units": 5}, 2, structure=key), _Never())
    unknown = runner.run(TrialSpec(2, {}, 3, structure="0" * 64), _Never())
    assert first.state is TrialState.COMPLETE and again.state is TrialState.COMPLETE
    assert _layers({"config": json.loads(again.config_json)})["block2"]["units"] == 5
    assert unknown.state is TrialState.FAIL and "was not sent" in unknown.message
    assert unknown.reason is FailReason.WORKER_DIED  # retryable: the retry ships it again
    assert len(runner._structures) == 1
