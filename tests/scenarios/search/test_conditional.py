"""Conditional keys: sampled only in trials where their ``when`` holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from search_support import run

from clonesweep.errors import SpecError
from clonesweep.spec import load_sweep

SWITCHED = """
  switch.dropout: {values: [true, false]}
  layers.drop.rate: {min: 0.1, max: 0.4, when: {switch.dropout: true}, otherwise: 0.0}
  layers.hidden.units: {values: [8, 16, 32]}
  layers.hidden.activation: {values: [relu, tanh], when: {layers.hidden.units: [16, 32]}}"""


def test_conditional_keys_appear_only_when_their_condition_holds(
        sweep: Callable[..., Path]) -> None:
    path = sweep(parameters=SWITCHED, trials=6, sweep="sampler: {name: tpe, seed: 3}",
                 extra="enqueue: [{switch.dropout: true}, {switch.dropout: false, "
                       "layers.hidden.units: 8}]")
    spec, outcome, study = run(path)
    assert outcome.counts.complete == 6
    seen = set()
    for t in study.get_trials():
        on = t.params["switch.dropout"]
        seen.add(on)
        assert ("layers.drop.rate" in t.params) is on
        units = t.params["layers.hidden.units"]
        assert ("layers.hidden.activation" in t.params) is (units != 8)
        record = json.loads((spec.run_folder / "trials" / f"{t.number:05d}.json").read_text())
        layers = {lay["config"]["name"]: lay["config"]
                  for lay in record["config"]["config"]["layers"]}
        # Off: `otherwise` is applied; on: the sampled rate. Never sampled when off.
        expected = t.params["layers.drop.rate"] if on else 0.0
        assert layers["drop"]["rate"] == pytest.approx(expected)
        assert record["params"]["switch.dropout"] is on
        if units == 8:  # no activation sampled: the base config's stays
            assert layers["hidden"]["activation"] == "relu"
    assert seen == {True, False}


@pytest.mark.parametrize(("parameters", "message", "field"), [
    ("""
  layers.drop.rate: {min: 0.1, max: 0.4, when: {switch.dropuot: true}}
  switch.dropout: {values: [true, false]}""", "not in parameters", "when.switch.dropuot"),
    ("""
  switch.dropout: {values: [true, false]}
  layers.drop.rate: {min: 0.1, max: 0.4, when: {switch.dropout: yes_please}}""",
     "never takes this value", "when.switch.dropout"),
    ("""
  layers.hidden.units: {min: 8, max: 32}
  layers.drop.rate: {min: 0.1, max: 0.4, when: {layers.hidden.units: 64}}""",
     "never takes this value", "when.layers.hidden.units"),
    ("""
  switch.a: {values: [1, 2], when: {switch.b: 1}}
  switch.b: {values: [1, 2], when: {switch.a: 1}}""", "form a cycle", "switch.a"),
    ("""
  switch.a: {values: [1, 2], when: {switch.a: 1}}""", "depend on itself", "switch.a"),
    ("""
  layers.drop.rate: {min: 0.1, max: 0.4, otherwise: 0.0}""", "only applies to a conditional",
     "otherwise"),
    ("""
  switch.a: {values: [1, 2]}
  layers.drop.rate: {min: 0.1, max: 0.4, when: {}}""", "expected a mapping", "when"),
    ("""
  switch.use-dropout: {values: [1, 2]}""", "Python identifier", "switch.use-dropout"),
    ("""
  model.blocks: {values: [1, 2]}""", "model.<argument>", "model.blocks"),
])
def test_bad_conditions_name_the_field(sweep: Callable[..., Path], parameters: str,
                                       message: str, field: str) -> None:
    with pytest.raises(SpecError) as info:
        load_sweep(sweep(parameters=parameters))
    assert message in str(info.value) and field in str(info.value)


def test_parents_come_before_the_keys_that_read_them(sweep: Callable[..., Path]) -> None:
    parameters = """
  layers.drop.rate: {min: 0.1, max: 0.4, when: {switch.b: 2}}
  switch.b: {values: [1, 2], when: {switch.a: true}}
  layers.hidden.units: {values: [8, 16]}
  switch.a: {values: [true, false]}"""
    spec = load_sweep(sweep(parameters=parameters))
    assert [p.path for p in spec.parameters] == [
        "layers.hidden.units", "switch.a", "switch.b", "layers.drop.rate"]
    drop = spec.parameters[-1]
    assert drop.active({"switch.b": 2}) and not drop.active({"switch.b": 1})
    assert not drop.active({})
