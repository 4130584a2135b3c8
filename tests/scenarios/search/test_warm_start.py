"""Warm start: ``enqueue:`` entries and another study's best trials run before sampling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from search_support import run

from clonesweep.cli.main import main
from clonesweep.errors import SpecError
from clonesweep.spec import load_sweep

PARAMS = """
  layers.hidden.units: {values: [8, 16, 32, 64]}
  optimizer.learning_rate: {min: 0.001, max: 0.01, log: true}"""


def test_enqueued_params_run_first(sweep: Callable[..., Path]) -> None:
    extra = """enqueue:
  - {layers.hidden.units: 64, optimizer.learning_rate: 0.005}
  - {layers.hidden.units: 16}"""
    _, _outcome, study = run(sweep(parameters=PARAMS, trials=3, extra=extra,
                                  sweep="sampler: {name: tpe, seed: 0}"))
    first, second, third = study.get_trials()
    assert first.params == {"layers.hidden.units": 64, "optimizer.learning_rate": 0.005}
    assert second.params["layers.hidden.units"] == 16  # the rest is sampled
    assert first.user_attrs["enqueued"] == second.user_attrs["enqueued"] == "sweep file"
    assert "enqueued" not in third.user_attrs


def test_a_resumed_sweep_does_not_enqueue_twice(sweep: Callable[..., Path]) -> None:
    extra = "enqueue: [{layers.hidden.units: 64, optimizer.learning_rate: 0.005}]"
    run(sweep(parameters=PARAMS, trials=1, extra=extra))
    _, _, study = run(sweep(parameters=PARAMS, trials=2, extra=extra))
    assert [t.user_attrs.get("enqueued") for t in study.get_trials()] == ["sweep file", None]


def test_warm_start_from_another_studys_best_trials(sweep: Callable[..., Path],
                                                   tmp_path: Path) -> None:
    old_spec, _, old = run(sweep(name="old", parameters=PARAMS, trials=3))
    ranked = sorted(old.get_trials(), key=lambda t: -float(t.value or 0.0))
    storage = f"journal://{old_spec.run_folder / 'study.log'}"
    # Keys of the old study that this sweep lacks are dropped; values outside the new
    # space are dropped (the new space keeps only 2 of the old units).
    new_params = """
  layers.hidden.units: {values: [8, 16, 32, 64]}
  optimizer.learning_rate: {min: 0.001, max: 0.01, log: true}
  layers.drop.rate: {min: 0.0, max: 0.3}"""
    path = sweep(name="new", parameters=new_params, trials=3,
                 sweep=f"sampler: random\n  enqueue_from: {{study: old, storage: '{storage}', "
                       "top: 2}")
    _, _, new = run(path)
    got = new.get_trials()
    for mine, theirs in zip(got[:2], ranked[:2], strict=True):
        assert mine.user_attrs["enqueued"] == "study old"
        for key, value in theirs.params.items():
            assert mine.params[key] == value
    assert "enqueued" not in got[2].user_attrs


def test_enqueue_from_on_the_command_line(sweep: Callable[..., Path], tmp_path: Path) -> None:
    shared = f"sampler: random\n  storage: sqlite:///{tmp_path / 'shared.db'}"
    _, _, first = run(sweep(name="a", parameters=PARAMS, trials=2, sweep=shared))
    path = sweep(name="b", parameters=PARAMS, trials=3, sweep=shared)
    assert main(["run", str(path), "--backend", "inprocess", "--enqueue-from", "nope"]) == 2
    assert not (tmp_path / "runs" / "b").exists()  # nothing created
    assert main(["run", str(path), "--backend", "inprocess", "--enqueue-from", "a",
                 "--json"]) == 0
    _, _, second = run(path)
    head = second.get_trials()[0]
    assert head.user_attrs["enqueued"] == "study a"
    assert head.params == first.best_trial.params


@pytest.mark.parametrize(("extra", "message"), [
    ("enqueue: {layers.hidden.units: 8}", "expected a list"),
    ("enqueue: [{layers.hidden.unit: 8}]", "not a sampled key"),
    ("enqueue: [{layers.hidden.units: 12}]", "outside the key's search space"),
    ("enqueue: [{optimizer.learning_rate: 0.5}]", "outside the key's search space"),
    ("enqueue: [{}]", "an empty configuration"),
])
def test_bad_enqueue_entries(sweep: Callable[..., Path], extra: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_sweep(sweep(parameters=PARAMS, extra=extra))
