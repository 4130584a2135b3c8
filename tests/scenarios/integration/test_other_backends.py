"""The worker path on Keras's other backends: JAX (and PyTorch where it is installed).

TensorFlow, the default, is what the rest of the suite runs on. Each backend runs in its own
process (Keras picks its backend at import) through tests/scenarios/integration/worker_path.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_worker_path_runs_on_backend(backend: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install {backend})")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLA_PYTHON_CLIENT")}
    env.update(KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, str(HERE / "worker_path.py")], env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["backend"] == backend

    first, again, other, pruned = out["mlp"]
    for trial in (first, again, other):
        assert trial["state"] == "complete", trial["message"]
        assert len(trial["history"]["val_accuracy"]) == 2
        assert 0.0 <= trial["value"] <= 1.0
        # The traced-graph engine is TensorFlow's: Keras's fit trains, and says why.
        assert trial["engine"] == "keras"
        assert trial["engine_fallback"] == f"graph: backend: the Keras backend is {backend}"
    # Same seed, same params: the same trial, bit for bit; another seed trains differently.
    assert first["history"] == again["history"] and first["config_hash"] == again["config_hash"]
    assert other["history"]["loss"] != first["history"]["loss"]
    assert first["param_count"] == 64 * 24 + 24 + 24 * 10 + 10
    assert pruned["state"] == "pruned" and out["pruned_steps"] == [0]
    assert "model.weights.h5" in out["best_model_files"]
    (cnn,) = out["cnn"]
    assert cnn["state"] == "complete", cnn["message"]

    if backend == "jax":
        # Packed workers must not preallocate the GPU, and a share caps what one may take.
        assert out["env"] == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false",
                              "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.250"}
