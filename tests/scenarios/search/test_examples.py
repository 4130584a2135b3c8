"""The example sweep files of configs/ that show the search features load and check out."""

from __future__ import annotations

from clonesweep.orchestrator import base_model_config
from clonesweep.orchestrator.study.plugins import make_pruner, make_sampler
from clonesweep.spec import load_sweep
from tests_support import CONFIGS


def test_the_structural_example_builds_its_base_structure() -> None:
    spec = load_sweep(CONFIGS / "digits_factory.yaml")
    assert spec.structural and spec.enqueue
    config = base_model_config(spec)
    names = [layer["config"]["name"] for layer in config["config"]["layers"]]
    assert names[-2:] == ["drop", "out"] and "block0" in names  # blocks=1, dropout=true
    make_sampler(spec), make_pruner(spec)


def test_the_pareto_example_is_multi_objective_and_constrained() -> None:
    spec = load_sweep(CONFIGS / "digits_pareto.yaml")
    assert [o.metric for o in spec.objectives] == [
        "val_accuracy", "param_count", "inference_latency_ms"]
    assert spec.constraints[0].label == "param_count<=20000"
    assert spec.parameters[-1].when[0].key == "switch.dropout"
    make_sampler(spec), make_pruner(spec)
