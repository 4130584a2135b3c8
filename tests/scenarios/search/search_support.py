"""Short real sweeps (digits, a few trials, 1-2 epochs) for the search-feature tests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna

from clonesweep.orchestrator import InProcessBackend, base_model_config, run_sweep
from clonesweep.orchestrator.study.storage import storage_url
from clonesweep.spec import SweepSpec, load_sweep
from tests_support import CONFIGS

PARAMS = """
  layers.hidden.units: {values: [8, 32]}
  optimizer.learning_rate: {min: 0.001, max: 0.01, log: true}"""


def write(folder: Path, *, name: str = "s", parameters: str = PARAMS,
          objective: str = "{metric: val_accuracy, direction: maximize}",
          sweep: str = "sampler: {name: random, seed: 0}", trials: int = 3, parallel: int = 1,
          epochs: int = 1, extra: str = "", model: str = "config: model.json",
          limit: int = 300) -> Path:
    """A sweep file over the digits MLP (or ``model``) with the given blocks."""
    shutil.copy(CONFIGS / "digits_mlp.json", folder / "model.json")
    text = f"""
name: {name}
model: {{{model}}}
data: {{loader: clonesweep.datasets:digits, kwargs: {{limit: {limit}}}}}
training: {{epochs: {epochs}, batch_size: 64, metrics: [accuracy]}}
objective: {objective}
parameters:{parameters}
{extra}
sweep:
  trials: {trials}
  parallel: {parallel}
  run_dir: runs
  {sweep}
"""
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


Run = tuple[SweepSpec, Any, optuna.Study]


def run(path: Path) -> Run:
    """Run the sweep on the in-process backend; return its spec, outcome and study."""
    spec = load_sweep(path)
    outcome = run_sweep(spec, base_model_config(spec), InProcessBackend())
    study = optuna.load_study(study_name=spec.name, storage=storage_url(spec))
    return spec, outcome, study
