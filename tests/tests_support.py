"""Helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


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


def pids_with_env(variable: str, value: str) -> list[int]:
    """Processes (other than this one) whose environment holds ``variable=value``: the ones a
    test started and marked, so it can kill exactly those and nothing else on the machine."""
    needle = f"{variable}={value}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids
