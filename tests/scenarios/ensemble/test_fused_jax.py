"""``clonesweep ensemble --fused`` for models the TensorFlow stacked engine does not cover:
the members train fused on JAX workers (workers/engines/jaxgroup.py), are recorded as such,
and export ``.keras`` members that load and predict on TensorFlow (this process's backend).
The engine's equivalence with members trained alone is tested in
tests/unit/workers/engines/test_jaxfused.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clonesweep.orchestrator.study.storage import load_study
from clonesweep.workers.engines.jaxgroup import mode_for
from tests_support import CONFIGS

_SWEEP = """name: tiny-{model}
model: {{config: {config}}}
data: {{loader: clonesweep.datasets:digits_images, kwargs: {{limit: 200}}}}
training:
  epochs: 1
  batch_size: 32
  optimizer: {{name: adam, learning_rate: 1.0e-3}}
  metrics: [accuracy]
objective: {{metric: val_accuracy, direction: maximize}}
parameters:
  layers.drop.rate: {{value: 0.2}}
sweep: {{trials: 1, parallel: 2, seed: 0}}
"""


def _sweep(tmp_path: Path, model: str) -> Path:
    path = tmp_path / f"{model}.yaml"
    path.write_text(_SWEEP.format(model=model, config=CONFIGS / f"digits_{model}.json"))
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clonesweep", *args], cwd=cwd,
                          env=dict(os.environ), capture_output=True, text=True, timeout=560)


def test_mode_follows_the_layer_kinds() -> None:
    for name, mode in (("cnn_bn", "vmap"), ("transformer", "vmap"), ("mlp", "map")):
        config = json.loads((CONFIGS / f"digits_{name}.json").read_text())
        assert mode_for(config) == mode, name


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn_bn", "transformer"])
def test_ensemble_fused_on_jax_workers(ray_cluster: str, tmp_path: Path, model: str) -> None:
    import keras

    from clonesweep.datasets import digits_images

    done = _cli("ensemble", str(_sweep(tmp_path, model)), "--members", "3", "--fused",
                "--address", ray_cluster, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    payload = json.loads(done.stdout)
    assert payload["members_held"] == 3 and payload["fused"] is True, payload
    assert payload["fused_note"] == "" and all(m["fused"] for m in payload["members"])
    storage = f"journal://{tmp_path / 'runs' / f'tiny-{model}' / 'study.log'}"
    study = load_study(f"tiny-{model}-ensemble", storage)
    trials = study.get_trials()
    assert [t.user_attrs["engine"] for t in trials] == ["fused-jax"] * 3
    assert all(t.user_attrs["engine_fallback"] is None for t in trials)
    assert all(t.user_attrs["environment"]["keras_backend"] == "jax" for t in trials)
    # Members differ (own seeds) and each saved member predicts on TensorFlow what its
    # worker scored on JAX.
    _, _, x_val, y_val = digits_images(limit=200)
    assert keras.backend.backend() == "tensorflow"
    weights = []
    for trial in trials:
        member = keras.saving.load_model(tmp_path / "runs" / f"tiny-{model}" / "ensemble" /
                                         "members" / f"member-{trial.number:02d}.keras")
        accuracy = float(np.mean(np.argmax(member.predict(x_val, verbose=0), -1) == y_val))
        assert abs(accuracy - trial.value) <= 1.0 / len(y_val), (accuracy, trial.value)
        weights.append(member.get_layer("out").get_weights()[0])
    assert np.abs(weights[0] - weights[1]).max() > 1e-2


@pytest.mark.slow
def test_in_process_fused_group_falls_back_saying_why(tmp_path: Path) -> None:
    """The in-process backend runs the members in this (TensorFlow) process: the JAX engine
    declines the group and each member trains alone on Keras's fit, saying so."""
    done = _cli("ensemble", str(_sweep(tmp_path, "cnn_bn")), "--members", "2", "--fused",
                "--backend", "inprocess", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    payload = json.loads(done.stdout)
    assert payload["members_held"] == 2 and payload["fused"] is False, payload
    assert "fused-jax: backend" in payload["fused_note"], payload
    assert "KERAS_BACKEND=jax" in payload["fused_note"], payload
    assert not any(m["fused"] for m in payload["members"])
