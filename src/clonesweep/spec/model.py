"""The typed, frozen form of a sweep file. Built only by :func:`clonesweep.spec.load_sweep`.

The search space's own types (:class:`ParamSpec`, its conditions and distributions) are in
:mod:`clonesweep.spec.params`, with the walk a trial's values take through them.

Nothing here imports Keras, Ray or Optuna: a spec is plain data that travels to workers.

About 350 lines, past the usual 300: these are the frozen types every other module reads,
with no logic beyond their own invariants; the search-space types are in
:mod:`clonesweep.spec.params`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The search-space types live in spec/params.py; named here too, beside the sweep's other
# types, because a SweepSpec holds them.
from clonesweep.spec.params import Condition, Distribution, ParamSpec, same_value

__all__ = [
    "PACK_MODES",
    "SPECIAL_METRICS",
    "CallbackSpec",
    "Condition",
    "ConstraintSpec",
    "DataSpec",
    "Direction",
    "Distribution",
    "EnqueueFrom",
    "MlflowSpec",
    "ModelSource",
    "ModelSpec",
    "ObjectiveSpec",
    "PackSpec",
    "ParamSpec",
    "PlugSpec",
    "ResourcesSpec",
    "SweepSettings",
    "SweepSpec",
    "TrackersSpec",
    "TrainingSpec",
    "WandbSpec",
    "same_value",
]


class Direction(str, enum.Enum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


class ModelSource(str, enum.Enum):
    CONFIG = "config"    # a JSON file written from get_config / serialize_keras_object
    FILE = "file"        # a .keras archive (its config.json; weights only for what
    #                      preprocessing layers adapted: clonesweep.orchestrator.model)
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
class CallbackSpec:
    """A Keras callback named in the sweep file (``training.callbacks``).

    Attributes:
        name: A class of ``keras.callbacks`` (``EarlyStopping``, ``ReduceLROnPlateau``,
            ``TerminateOnNaN``) or a registered name (``package>ClassName``) of the user's
            own, registered with ``keras.saving.register_keras_serializable`` in a module
            listed under ``model.imports``.
        config: The keyword arguments it is built with, each trial its own instance.
    """

    name: str
    config: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class PackSpec:
    """``training.pack``: packed trials (:mod:`clonesweep.orchestrator.packing`).

    Attributes:
        enabled: Group trials of one structure and train each group as one vmapped program
            on Keras's JAX backend (the sweep's workers then run Keras on JAX). None (the
            file leaves it out, or says ``auto``): decided when the sweep starts, on where
            it measured faster (:func:`clonesweep.orchestrator.packing.resolve_packing`);
            read as off until then.
        max_trials: The most trials in one group (and asked at once).
        mode: How the group's step runs its trials: ``vmap`` (fastest), ``map`` (MLPs bitwise
            equal to training alone) or ``serial`` (bitwise for every layer kind tried).
    """

    enabled: bool | None = None
    max_trials: int = 8
    mode: str = "vmap"


#: ``training.pack.mode`` values.
PACK_MODES = ("vmap", "map", "serial")


@dataclass(frozen=True)
class TrainingSpec:
    """Fixed training settings; ``train.<key>`` and ``optimizer.<key>`` params override them.

    ``class_weight`` (class index -> weight) and ``callbacks`` go to Keras's ``fit`` as they
    are; engines that do not cover them hand the trial to Keras's fit. ``jit_compile`` None
    (unset in the file) is each backend's usual path: :meth:`jit_for`.
    """

    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "adam"
    optimizer_config: dict[str, Any] = field(default_factory=dict, hash=False)
    loss: str = "sparse_categorical_crossentropy"
    metrics: tuple[str, ...] = ("accuracy",)
    steps_per_execution: int = 1
    jit_compile: bool | None = None
    validation_batch_size: int = 256
    reuse_graphs: bool = True
    class_weight: dict[int, float] | None = field(default=None, hash=False)
    callbacks: tuple[CallbackSpec, ...] = ()
    pack: PackSpec = field(default_factory=PackSpec)

    def jit_for(self, backend: str) -> bool:
        """``compile``'s ``jit_compile`` on a worker running Keras on ``backend``: the file's
        value, else on for JAX (``jax.jit``: un-jitted, every op runs on its own, 5-20x
        slower) and off for TensorFlow (a graph without XLA, which costs ~5 s per new model
        on a CPU) and the others.

        >>> TrainingSpec().jit_for("jax"), TrainingSpec().jit_for("tensorflow")
        (True, False)
        >>> TrainingSpec(jit_compile=False).jit_for("jax")
        False
        """
        return self.jit_compile if self.jit_compile is not None else backend == "jax"


#: Metrics measured on the built model rather than logged by training: usable as objectives
#: and in constraints. ``inference_latency_ms`` is the median of a few ``predict_on_batch``
#: calls on a fixed batch of validation inputs, measured on the worker after training.
SPECIAL_METRICS = ("param_count", "inference_latency_ms")


@dataclass(frozen=True)
class ObjectiveSpec:
    metric: str = "val_accuracy"
    direction: Direction = Direction.MAXIMIZE


@dataclass(frozen=True)
class ConstraintSpec:
    """``{metric: param_count, max: 50000}``: a trial is feasible when ``min <= value <= max``.

    The metric is one of :data:`SPECIAL_METRICS` or a logged metric (its last-epoch value).
    """

    metric: str
    min: float | None = None
    max: float | None = None

    @property
    def label(self) -> str:
        """The constraint's name in the study (``param_count<=50000``)."""
        parts = []
        if self.min is not None:
            parts.append(f"{self.metric}>={self.min:g}")
        if self.max is not None:
            parts.append(f"{self.metric}<={self.max:g}")
        return ",".join(parts)

    def violation(self, value: float) -> float:
        """Optuna's convention: <= 0 when feasible, the amount by which it is missed if not."""
        worst = -math.inf
        if self.max is not None:
            worst = max(worst, value - self.max)
        if self.min is not None:
            worst = max(worst, self.min - value)
        return float(worst)


@dataclass(frozen=True)
class EnqueueFrom:
    """Warm start from another study: its best trials are enqueued before sampling.

    Attributes:
        study: The other study's name.
        storage: Its storage URL; None means this sweep's storage.
        top: How many of its best complete trials (single objective); a multi-objective
            study gives its Pareto front, cut to ``top``.
    """

    study: str
    storage: str | None = None
    top: int = 3


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
        storage: An Optuna storage URL; None means the journal file ``study.log`` in the run folder.
        run_dir: The folder under which ``<name>/`` is created.
        resources: CPUs and (fractional) GPUs per trial.
        retries: Retries per trial for retryable failures (worker died, OOM).
        trial_timeout: Seconds a trial may run; None for no limit.
        resource_wait: Seconds trials may wait while no worker can be placed on the cluster
            (nodes lost) before the sweep stops with SweepFailed.
        seed: The sweep seed; each trial's seed is derived from it and the trial number.
        enqueue_from: Warm start from another study's best trials (None: none).
        checkpoint_dir: Where workers write per-epoch checkpoints (under ``<name>/``); None:
            ``<run folder>/checkpoints``. On a cluster, a folder every node reaches.
        checkpoint_every_s: A trial writes a checkpoint after an epoch only when this many
            seconds passed since its last one (0: after every epoch).
        tensorboard: Write TensorBoard logs, one folder per trial under
            ``<run folder>/tensorboard/``, with its params for the HParams view.
        project: The project storage as given (``sweep.project``, ``--project`` or
            ``$CLONESWEEP_PROJECT``): ``storage`` then holds its URL, shared by many sweeps,
            each the study of its name.
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
    resource_wait: float = 300.0
    seed: int = 0
    enqueue_from: EnqueueFrom | None = None
    checkpoint_dir: Path | None = None
    checkpoint_every_s: float = 30.0
    tensorboard: bool = False
    project: str | None = None


@dataclass(frozen=True)
class MlflowSpec:
    """``trackers.mlflow``: each told trial becomes an MLflow run (Optuna's MLflowCallback).

    Attributes:
        tracking_uri: Where MLflow writes (``file:`` URIs absolute already); None: MLflow's
            own choice (``$MLFLOW_TRACKING_URI``, else its default).
        experiment: The experiment's name; None: the sweep's name.
    """

    tracking_uri: str | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class WandbSpec:
    """``trackers.wandb``: one W&B run per sweep, a step per told trial (Optuna's
    WeightsAndBiasesCallback).

    Attributes:
        project: The W&B project; None: the sweep's name.
        entity: The W&B team or user; None: W&B's default.
        mode: ``online``, ``offline`` (files only, ``wandb sync`` later) or ``disabled``.
        dir: Where W&B keeps its files; None: the run folder.
    """

    project: str | None = None
    entity: str | None = None
    mode: str = "online"
    dir: Path | None = None


@dataclass(frozen=True)
class TrackersSpec:
    """``trackers``: experiment trackers the driver tells each finished trial to."""

    mlflow: MlflowSpec | None = None
    wandb: WandbSpec | None = None

    @property
    def any(self) -> bool:
        return self.mlflow is not None or self.wandb is not None


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file.

    ``objective`` is the first (or only) objective; ``objectives`` holds them all, in order
    (filled from ``objective`` when not given). ``constraints`` bound the feasible trials;
    ``enqueue`` lists param dicts run before any sampling (warm start).
    """

    name: str
    file: Path
    model: ModelSpec
    data: DataSpec
    training: TrainingSpec
    objective: ObjectiveSpec
    parameters: tuple[ParamSpec, ...]
    sweep: SweepSettings
    objectives: tuple[ObjectiveSpec, ...] = ()
    constraints: tuple[ConstraintSpec, ...] = ()
    enqueue: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    trackers: TrackersSpec = field(default_factory=TrackersSpec)

    def __post_init__(self) -> None:
        if not self.objectives:
            object.__setattr__(self, "objectives", (self.objective,))

    @property
    def is_multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def structural(self) -> bool:
        """Whether ``model.<argument>`` params pick the factory's structure per trial (for a
        constructor-argument config they are the config's own entries instead)."""
        return self.model.source is ModelSource.FACTORY and \
            any(p.path.startswith("model.") for p in self.parameters)

    @property
    def run_folder(self) -> Path:
        return self.sweep.run_dir / self.name
