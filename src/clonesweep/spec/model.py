"""The typed, frozen form of a sweep file. Built only by :func:`clonesweep.spec.load_sweep`.

Nothing here imports Keras, Ray or Optuna: a spec is plain data that travels to workers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DataSpec",
    "Direction",
    "Distribution",
    "ModelSource",
    "ModelSpec",
    "ObjectiveSpec",
    "ParamSpec",
    "PlugSpec",
    "ResourcesSpec",
    "SweepSettings",
    "SweepSpec",
    "TrainingSpec",
]


class Direction(str, enum.Enum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


class ModelSource(str, enum.Enum):
    CONFIG = "config"    # a JSON file written from get_config / serialize_keras_object
    FILE = "file"        # a .keras archive (its config.json is used; weights are not)
    FACTORY = "factory"  # module:function returning a keras.Model


@dataclass(frozen=True)
class ModelSpec:
    """Where the base model comes from.

    Attributes:
        source: Which of the three kinds ``ref`` is.
        ref: An absolute path (CONFIG, FILE) or ``module:function`` (FACTORY).
        imports: Modules every worker imports before rebuilding (they register custom
            layers with ``keras.saving.register_keras_serializable``).
        config: The base model config (the ``serialize_keras_object`` envelope), when it
            could be read without Keras (CONFIG, FILE); None for a factory until the driver
            has called it.
    """

    source: ModelSource
    ref: str
    imports: tuple[str, ...] = ()
    config: dict[str, Any] | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class DataSpec:
    """``loader`` is ``module:function``; called as ``loader(**kwargs)`` it returns
    ``(x_train, y_train, x_val, y_val)`` (numpy arrays, or tuples/dicts of them)."""

    loader: str
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class TrainingSpec:
    """Fixed training settings; ``train.<key>`` and ``optimizer.<key>`` params override them."""

    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "adam"
    optimizer_config: dict[str, Any] = field(default_factory=dict, hash=False)
    loss: str = "sparse_categorical_crossentropy"
    metrics: tuple[str, ...] = ("accuracy",)
    steps_per_execution: int = 1
    jit_compile: bool = False
    validation_batch_size: int = 256


@dataclass(frozen=True)
class ObjectiveSpec:
    metric: str = "val_accuracy"
    direction: Direction = Direction.MAXIMIZE


class Distribution(str, enum.Enum):
    """W&B-style distribution names accepted under ``parameters.<path>.distribution``."""

    CONSTANT = "constant"
    CATEGORICAL = "categorical"
    UNIFORM = "uniform"
    INT_UNIFORM = "int_uniform"
    Q_UNIFORM = "q_uniform"
    LOG_UNIFORM_VALUES = "log_uniform_values"
    INT_LOG_UNIFORM_VALUES = "int_log_uniform_values"


@dataclass(frozen=True)
class ParamSpec:
    """One search-space entry.

    Attributes:
        path: The search-space key (``layers.hidden.units``, ``layers[Dense].units``,
            ``optimizer.learning_rate``, ``train.batch_size``).
        distribution: What to sample from.
        values: The choices (CATEGORICAL) or the single value (CONSTANT).
        low, high: Bounds (inclusive) for numeric distributions.
        log: Sample on a log scale.
        step: Grid step for Q_UNIFORM / INT_* distributions (None: continuous / 1).
    """

    path: str
    distribution: Distribution
    values: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    @property
    def is_fixed(self) -> bool:
        return self.distribution is Distribution.CONSTANT


@dataclass(frozen=True)
class PlugSpec:
    """A named plug-in with its settings (a sampler, a pruner)."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class SweepSettings:
    """How the sweep runs.

    Attributes:
        trials: Number of finished trials to reach (complete + pruned + failed).
        parallel: Trials in flight at once (one worker actor each).
        sampler: Optuna sampler by name (``tpe``, ``random``, ...) and its settings.
        pruner: Optuna pruner by name (``median``, ``hyperband``, ``none``, ...).
        storage: An Optuna storage URL; None means a SQLite file in the run folder.
        run_dir: The folder under which ``<name>/`` is created.
        resources: CPUs and (fractional) GPUs per trial.
        retries: Retries per trial for retryable failures (worker died, OOM).
        trial_timeout: Seconds a trial may run; None for no limit.
        seed: The sweep seed; each trial's seed is derived from it and the trial number.
    """

    trials: int = 10
    parallel: int = 1
    sampler: PlugSpec = field(default_factory=lambda: PlugSpec("tpe"))
    pruner: PlugSpec = field(default_factory=lambda: PlugSpec("none"))
    storage: str | None = None
    run_dir: Path = Path("runs")
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    retries: int = 1
    trial_timeout: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file."""

    name: str
    file: Path
    model: ModelSpec
    data: DataSpec
    training: TrainingSpec
    objective: ObjectiveSpec
    parameters: tuple[ParamSpec, ...]
    sweep: SweepSettings

    @property
    def run_folder(self) -> Path:
        return self.sweep.run_dir / self.name
