"""A Ray worker whose versions differ from the driver's refuses to start, naming both."""

from __future__ import annotations

from typing import Any

import pytest

from clonesweep.errors import SweepFailed
from clonesweep.orchestrator import base_model_config, run_sweep
from clonesweep.orchestrator.backends.ray.backend import RayBackend
from clonesweep.spec import load_sweep
from clonesweep.workers import versions

pytestmark = pytest.mark.integration


def test_a_worker_with_another_keras_is_refused(
        ray_cluster: str, sweep_file: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = versions.runtime_versions

    def driver_versions(backend: str) -> tuple[tuple[str, str], ...]:
        return tuple((k, "9.9.9" if k == "keras" else v) for k, v in real(backend))

    # Only the driver (this process) believes it runs Keras 9.9.9; the worker actors don't.
    monkeypatch.setattr(versions, "runtime_versions", driver_versions)
    spec = load_sweep(sweep_file(trials=3, parallel=1, epochs=1))
    with pytest.raises(SweepFailed) as info:
        run_sweep(spec, base_model_config(spec), RayBackend(resources=spec.sweep.resources))
    import keras

    text = str(info.value)
    assert "worker failed to start: version mismatch on worker-0" in text, text
    assert f"keras: driver 9.9.9, worker {keras.__version__}" in text, text
