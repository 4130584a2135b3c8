"""The driver side: the sweep loop, the Optuna study, execution backends, the run folder."""

from clonesweep.orchestrator.backend import Backend, InProcessBackend
from clonesweep.orchestrator.model import base_model_config
from clonesweep.orchestrator.sweep import (
    BestTrial,
    Counts,
    NullProgress,
    Progress,
    SweepOutcome,
    run_sweep,
)

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
