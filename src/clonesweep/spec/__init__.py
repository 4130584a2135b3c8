"""Reading sweep files: schema, search space, config paths. No Keras, Ray or Optuna here.

Example:
    >>> from clonesweep.spec import load_sweep
    >>> spec = load_sweep("configs/digits_mlp.yaml")
    >>> spec.name
    'digits-mlp'
"""

from clonesweep.spec.loader import load_sweep
from clonesweep.spec.model import (
    SPECIAL_METRICS,
    CallbackSpec,
    Condition,
    ConstraintSpec,
    DataSpec,
    Direction,
    Distribution,
    EnqueueFrom,
    ModelSource,
    ModelSpec,
    ObjectiveSpec,
    ParamSpec,
    PlugSpec,
    ResourcesSpec,
    SweepSettings,
    SweepSpec,
    TrainingSpec,
)
from clonesweep.spec.searchspace import check_parameters

__all__ = [
    "SPECIAL_METRICS",
    "CallbackSpec",
    "Condition",
    "ConstraintSpec",
    "DataSpec",
    "Direction",
    "Distribution",
    "EnqueueFrom",
    "ModelSource",
    "ModelSpec",
    "ObjectiveSpec",
    "ParamSpec",
    "PlugSpec",
    "ResourcesSpec",
    "SweepSettings",
    "SweepSpec",
    "TrainingSpec",
    "check_parameters",
    "load_sweep",
]
