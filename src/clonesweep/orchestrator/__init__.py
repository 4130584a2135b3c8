"""The driver side: the sweep loop, the Optuna study, execution backends, the run folder.

The map (each folder's ``__init__`` says more):

- ``loop.py``: the one loop of sweeps and ensembles (ask, submit, collect, tell), driven by
  a policy: ``sweep_policy.py`` for a sweep's trials, ``ensemble/members.py`` for members.
- ``sweep.py``: running a sweep (``run_sweep``) and what it returns.
- ``records.py``: what a trial and a study store (attributes, the run folder's records).
- ``search.py``: the search side of a trial (params, structures, objectives, constraints).
- ``testing.py``: a scripted backend that tests the loop without Keras or Ray.
- ``model.py``: the base model config on the driver, read and serialized once.
- ``study/``: the Optuna study: set-up, storage, journal, outbox, lease, resume, checks.
- ``backends/``: the execution contract, its in-process twin, and ``ray/``.
- ``ensemble/``: members of a seeded ensemble, their scoring and export.
- ``commands/``: what the read-only commands compute (validate, corners, inspect, repro,
  report); the CLI only parses and prints.

Importing this package is free: the names below load their module on first use, so a worker
process that unpickles a Ray actor class from ``backends/ray`` imports neither Optuna nor
SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Backend",
    "BestTrial",
    "Counts",
    "InProcessBackend",
    "NullProgress",
    "Progress",
    "SweepOutcome",
    "base_model_config",
    "run_sweep",
]

_HOMES = {
    "Backend": "clonesweep.orchestrator.backends.base",
    "InProcessBackend": "clonesweep.orchestrator.backends.base",
    "base_model_config": "clonesweep.orchestrator.model",
    "BestTrial": "clonesweep.orchestrator.sweep",
    "Counts": "clonesweep.orchestrator.sweep",
    "NullProgress": "clonesweep.orchestrator.sweep",
    "Progress": "clonesweep.orchestrator.sweep",
    "SweepOutcome": "clonesweep.orchestrator.sweep",
    "run_sweep": "clonesweep.orchestrator.sweep",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'clonesweep.orchestrator' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
