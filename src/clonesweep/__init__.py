"""clonesweep: config-native hyperparameter sweeps and seeded ensembles of Keras 3 models.

A driver serializes a base model config once; Ray worker actors rebuild each variant through
``keras.models.clone_model`` with mutated hyperparameters and derived seeds, train it and
report back; one Optuna study, written only by the driver, tracks every trial.

Importing this package is cheap: Keras is imported by :func:`build_variant` and the workers,
Optuna and Ray by :func:`run`, :func:`ensemble`, :func:`run_sweep` and the backends.

Example (docs/api.md)::

    import clonesweep

    result = clonesweep.run("configs/digits_mlp.yaml", trials=8)
    result.best, result.best_model(), result.dataframe(), result.history(result.best.number)
    members = clonesweep.ensemble("configs/digits_mlp.yaml", members=4, trial="best")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clonesweep.api import EnsembleResult, SweepResult, ensemble, run
from clonesweep.errors import (
    CloneSweepError,
    ConfigPathError,
    RebuildError,
    SpecError,
    StudyError,
    SweepFailed,
    UnsafeConfigError,
)
from clonesweep.spec import load_sweep
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import FailReason, Intermediate, TrialResult, TrialSpec, TrialState

if TYPE_CHECKING:
    import keras

__version__ = "0.1.0"

__all__ = [
    "CloneSweepError",
    "ConfigPathError",
    "EnsembleResult",
    "FailReason",
    "Intermediate",
    "RebuildError",
    "SpecError",
    "StudyError",
    "SweepFailed",
    "SweepResult",
    "SweepSpec",
    "TrialResult",
    "TrialSpec",
    "TrialState",
    "UnsafeConfigError",
    "__version__",
    "build_variant",
    "ensemble",
    "load_sweep",
    "run",
    "run_sweep",
]


def build_variant(model_or_config: keras.Model | dict[str, Any] | str,
                  params: Mapping[str, Any] | None = None, *, seed: int) -> keras.Model:
    """Rebuild a model with hyperparameters applied and every seed derived from ``seed``.

    See :func:`clonesweep.workers.rebuild.build_variant`.

    Example:
        >>> variant = clonesweep.build_variant(model, {"layers.hidden.units": 128}, seed=7)
    """
    from clonesweep.workers.rebuild import build_variant as _build

    return _build(model_or_config, params, seed=seed)


def run_sweep(*args: Any, **kwargs: Any) -> Any:
    """Run a sweep; see :func:`clonesweep.orchestrator.sweep.run_sweep`."""
    from clonesweep.orchestrator.sweep import run_sweep as _run

    return _run(*args, **kwargs)
