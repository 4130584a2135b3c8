"""A sweep on Ray whose workers run Keras on JAX while the driver's process uses TensorFlow.

The backend reaches the workers through Ray's runtime environment (set before they import
Keras), and the version check compares the driver's chosen backend with the worker's.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from clonesweep.orchestrator import base_model_config, run_sweep
from clonesweep.orchestrator.backends.ray.backend import RayBackend
from clonesweep.orchestrator.study.storage import load_study, storage_url
from clonesweep.spec import load_sweep

pytestmark = pytest.mark.integration


def test_ray_workers_train_on_jax(ray_cluster: str, sweep_file: Any) -> None:
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (it is in the test extra)")
    spec = load_sweep(sweep_file(name="on-jax", trials=2, parallel=1, epochs=1))
    outcome = run_sweep(spec, base_model_config(spec),
                        RayBackend(resources=spec.sweep.resources, keras_backend="jax"))
    assert outcome.counts.complete == 2, outcome.failures
    trials = load_study(spec.name, storage_url(spec)).get_trials()
    for t in trials:
        env = t.user_attrs.get("environment")
        if env is not None:  # recorded by the worker itself
            assert env["keras_backend"] == "jax", env
    assert outcome.best_model is not None and outcome.best_model.exists()
