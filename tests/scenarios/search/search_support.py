"""Running the search-feature tests' short sweeps (written by the ``sweep`` fixture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from clonesweep.orchestrator import InProcessBackend, base_model_config, run_sweep
from clonesweep.orchestrator.study.storage import load_study, storage_url
from clonesweep.spec import SweepSpec, load_sweep

Run = tuple[SweepSpec, Any, optuna.Study]


def run(path: Path) -> Run:
    """Run the sweep on the in-process backend; return its spec, outcome and study."""
    spec = load_sweep(path)
    outcome = run_sweep(spec, base_model_config(spec), InProcessBackend())
    study = load_study(spec.name, storage_url(spec))
    return spec, outcome, study
