"""Structural search across processes: each structure's config reaches each Ray worker once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from clonesweep.orchestrator import base_model_config, run_sweep
from clonesweep.orchestrator.backends.ray.backend import RayBackend
from clonesweep.orchestrator.study.storage import load_study, storage_url
from clonesweep.trials import TrialSpec


def test_the_ray_backend_ships_a_structure_once_per_worker() -> None:
    backend = RayBackend()
    spec = TrialSpec(0, {}, 1, structure="abc", structure_config_json="{}")
    assert backend._ship_once(spec, 0).structure_config_json == "{}"
    assert backend._ship_once(spec, 0).structure_config_json is None
    assert backend._ship_once(spec, 1).structure_config_json == "{}"  # another worker
    plain = TrialSpec(1, {}, 1)
    assert backend._ship_once(plain, 0) is plain
    backend._shipped.pop(0)  # what a worker restart does
    assert backend._ship_once(spec, 0).structure_config_json == "{}"


@pytest.mark.integration
def test_a_structural_sweep_on_ray(ray_cluster: str, sweep: Callable[..., Path]) -> None:
    from clonesweep.spec import load_sweep

    path = sweep(model="factory: clonesweep.examples.factories:digits_blocks", trials=4,
                 parallel=2, parameters="""
  model.blocks: {values: [1, 2]}
  layers.block0.units: {values: [8, 16]}""",
                 extra="enqueue: [{model.blocks: 1}, {model.blocks: 2}, {model.blocks: 1}, "
                       "{model.blocks: 2, layers.block0.units: 16}]")
    spec = load_sweep(path)
    outcome = run_sweep(spec, base_model_config(spec), RayBackend(resources=spec.sweep.resources))
    assert outcome.counts.complete == 4, outcome.failures
    study = load_study(spec.name, storage_url(spec))
    for t in study.get_trials():
        record = json.loads((spec.run_folder / "trials" / f"{t.number:05d}.json").read_text())
        names = [lay["config"]["name"] for lay in record["config"]["config"]["layers"]]
        assert [n for n in names if n.startswith("block")] == [
            f"block{i}" for i in range(t.params["model.blocks"])]
