"""What a worker is told once when it starts (:class:`WorkerJob`), and what it then holds for
all its trials as the engines see it (:class:`WorkerState`). No Keras import here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clonesweep.spec.model import ConstraintSpec, DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.workers.engines.base import TrainData
from clonesweep.workers.engines.feeds import FeedCache
from clonesweep.workers.streams import StreamData

__all__ = ["WorkerJob", "WorkerState"]


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs, sent once when it starts.

    Attributes:
        base_config_json: The base model's ``serialize_keras_object`` JSON.
        imports: Modules to import before any rebuild (custom layers register there).
        data: The data loader, called once per worker.
        training: Fixed training settings.
        objective: The metric reported each epoch and returned as the trial's value.
        trial_timeout: Seconds a trial may train before it fails with ``timeout``.
        cpus: CPUs per trial; TensorFlow's thread pools are sized to it.
        keep_best: Keep the models that may be the study's answer (as ``.keras`` bytes) for
            the driver: see :mod:`clonesweep.workers.keeper`.
        keep_objectives: The sweep's objectives (empty: ``objective`` alone), which
            ``keep_best`` ranks by.
        keep_constraints: The sweep's constraints: only trials meeting them are kept.
        versions: The driver's ``(name, version)`` pairs (see
            :func:`clonesweep.workers.versions.runtime_versions`); a worker whose own differ
            refuses to start. Empty: no check.
        gpu_memory_fraction: The share of a GPU's memory this worker may use (JAX, PyTorch;
            TensorFlow grows on demand instead); None: no cap.
        keep_members: Keep every completed trial's validation predictions and ``.keras``
            bytes for the driver (ensemble members; see :mod:`clonesweep.workers.member`).
        measure_latency: After training (complete or pruned), time inference: the median
            of a few ``predict_on_batch`` calls on the first validation inputs.
        checkpoint_dir: Absolute folder for per-epoch checkpoints (one every node reaches, on
            a cluster); None: no checkpoints, a retry starts from epoch 0.
        checkpoint_every_s: Write a trial's checkpoint after an epoch only when this many
            seconds passed since its last one (0: after every epoch but the last).
        retries: The driver's retries per trial: a retryable failure of an attempt below it
            keeps its checkpoint for the retry; every other end deletes it.
        keras_backend: The Keras backend the workers must run (``KERAS_BACKEND``, set by the
            backend before a worker imports Keras): ``jax`` for fused ensembles of models the
            TensorFlow stacked engine does not cover. None: the backend's own default. The
            in-process backend cannot honour it (Keras is imported in the caller's process).
        await_pruning: Per-epoch reports wait for the driver's pruning decision. False
            when no decision can stop a trial (no pruner, or a multi-objective sweep): the
            report is sent and training goes on at once, saving a round trip per epoch.
    """

    base_config_json: str
    imports: tuple[str, ...]
    data: DataSpec
    training: TrainingSpec
    objective: ObjectiveSpec
    trial_timeout: float | None = None
    cpus: float = 1.0
    keep_best: bool = True
    versions: tuple[tuple[str, str], ...] = ()
    gpu_memory_fraction: float | None = None
    keep_members: bool = False
    measure_latency: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every_s: float = 30.0
    retries: int = 0
    await_pruning: bool = True
    keep_objectives: tuple[ObjectiveSpec, ...] = ()
    keep_constraints: tuple[ConstraintSpec, ...] = ()
    keras_backend: str | None = None


@dataclass(frozen=True)
class WorkerState:
    """A worker's long-lived state as an engine sees it: handed to the fused engine instead
    of the runner itself, so that engines depend on this and never on the runner.

    Attributes:
        job: The worker's job.
        base_config: The base model config (parsed once; rebuild copies it).
        data: The loaded data: arrays, or a pair of datasets.
        feeds: What the worker keeps from the data for all its trials.
        node: The node (host) the worker runs on.
        worker: The worker's name.
    """

    job: WorkerJob
    base_config: dict[str, Any]
    data: TrainData | StreamData
    feeds: FeedCache
    node: str
    worker: str
