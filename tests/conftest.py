"""Shared fixtures: one real local Ray cluster per test session, tiny sweep files."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A real local Ray cluster (2 CPUs), started once; yields its address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def write_sweep(folder: Path, *, name: str = "tiny", trials: int = 2, parallel: int = 1,
                epochs: int = 2, parameters: str | None = None, sweep_extra: str = "",
                training_extra: str = "", limit: int = 400) -> Path:
    """A small digits-MLP sweep file (and its model config) in ``folder``."""
    shutil.copy(CONFIGS / "digits_mlp.json", folder / "model.json")
    parameters = parameters or """
  layers.hidden.units: {values: [8, 16]}
  optimizer.learning_rate: {min: 0.001, max: 0.01, log: true}"""
    text = f"""
name: {name}
model:
  config: model.json
data:
  loader: clonesweep.datasets:digits
  kwargs: {{limit: {limit}}}
training:
  epochs: {epochs}
  batch_size: 64
  optimizer: {{name: adam, learning_rate: 0.003}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]{training_extra}
objective:
  metric: val_accuracy
  direction: maximize
parameters:{parameters}
sweep:
  trials: {trials}
  parallel: {parallel}
  sampler: {{name: random, seed: 0}}
  run_dir: runs{sweep_extra}
"""
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def sweep_file(tmp_path: Path) -> Any:
    """A factory: ``sweep_file(**overrides)`` writes a tiny sweep file in tmp_path."""
    def make(**kwargs: Any) -> Path:
        return write_sweep(tmp_path, **kwargs)
    return make
