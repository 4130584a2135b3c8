"""``diff`` says what a trial trained differently: structure first, against the file's base."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from search_support import run

from clonesweep.cli.main import main
from clonesweep.orchestrator.commands.inspect import ABSENT, DEFAULT, trial_diff

FACTORY = "factory: clonesweep.examples.factories:digits_blocks"
STRUCTURAL = """
  model.blocks: {values: [2, 1]}
  model.dropout: {values: [false, true]}
  layers.block0.units: {values: [8, 16]}
  layers.drop.rate: {min: 0.1, max: 0.4, when: {model.dropout: true}}
  optimizer.learning_rate: {min: 0.001, max: 0.05, log: true}"""
ENQUEUE = """enqueue:
  - {model.blocks: 1, model.dropout: true, layers.block0.units: 8, layers.drop.rate: 0.2,
     optimizer.learning_rate: 0.01}
  - {model.blocks: 2, model.dropout: false, layers.block0.units: 16,
     optimizer.learning_rate: 0.01}"""


def test_a_structural_trial_is_compared_with_the_file_s_base(
        sweep: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep(model=FACTORY, parameters=STRUCTURAL, extra=ENQUEUE, trials=2)
    spec, _, study = run(path)
    changes = [(c.path, c.before, c.after) for c in trial_diff(spec, study, 0)]
    # Structure arguments first, then layers, then training keys; the base is the file's
    # model (2 blocks of 64, no dropout), not the trial's own structure.
    assert changes == [
        ("model.blocks", 2, 1),
        ("model.dropout", False, True),
        ("layers.block0.units", 64, 8),
        ("layers.block1", "Dense", ABSENT),
        ("layers.drop", ABSENT, "Dropout"),
        ("optimizer.learning_rate", DEFAULT, 0.01),
    ]
    # Between two trials of different structures: Keras's counter-made names (input_layer_1)
    # are matched by class, so only real differences show.
    between = [(c.path, c.before, c.after) for c in trial_diff(spec, study, 0, 1)]
    assert between == [
        ("model.blocks", 2, 1),
        ("model.dropout", False, True),
        ("layers.block0.units", 16, 8),
        ("layers.block1", "Dense", ABSENT),
        ("layers.drop", ABSENT, "Dropout"),
    ]
    assert main(["diff", str(path), "0", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["changes"][3] == {"path": "layers.block1", "before": "Dense",
                                     "after": "(absent)"}
    assert main(["diff", str(path), "0"]) == 0
    text = capsys.readouterr().out
    assert "6 change(s)" in text and "None" not in text
