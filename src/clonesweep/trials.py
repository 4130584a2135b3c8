"""The driver <-> worker contract: what a trial is asked to do and what it reports.

The driver turns an Optuna trial into a :class:`TrialSpec`, a worker runs it and returns a
:class:`TrialResult`. Between the two, the worker sends one :class:`Intermediate` per epoch
through a :class:`Reporter` and learns whether to stop (pruning). These values are plain,
frozen and picklable: they are all that crosses the process boundary, never a Keras or an
Optuna object.

About 310 lines, past the usual 300: this is the contract between driver and workers, and
its types (spec, result, states, fail and fallback reasons, the reporter) are read together
by anyone writing a backend or an engine.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

__all__ = [
    "DataKind",
    "EngineFallback",
    "FailReason",
    "FallbackReason",
    "Intermediate",
    "PackedGroup",
    "Reporter",
    "Timings",
    "TrialResult",
    "TrialSpec",
    "TrialState",
    "node_host",
    "node_label",
]


class TrialState(str, enum.Enum):
    """How a trial ended. Exactly one per trial."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"


class FailReason(str, enum.Enum):
    """Why a trial failed. Only ``WORKER_DIED`` and ``OOM`` are worth a retry.

    ``OOM`` is host memory (a retry may land on a node with more room); ``GPU_OOM`` is the
    accelerator's memory, which the retry would meet again: it runs the same model, batch size
    and GPU share on a worker of the same kind, so it is not retried (lower the batch size or
    raise ``sweep.resources.gpu``).

    ``DRIVER_DIED`` and ``INTERRUPTED`` are the driver's, not the trial's: a driver stopped
    (killed, or cut short by Ctrl-C/SIGTERM or a failed sweep) while the trial ran. Its params
    are re-queued with the same seed, and the failed trial does not count against the budget
    (:attr:`requeued`).
    """

    INVALID_CONFIG = "invalid_config"
    USER_ERROR = "user_error"
    NAN_LOSS = "nan_loss"
    TIMEOUT = "timeout"
    WORKER_DIED = "worker_died"
    OOM = "oom"
    GPU_OOM = "gpu_oom"
    DRIVER_DIED = "driver_died"
    INTERRUPTED = "interrupted"

    @property
    def retryable(self) -> bool:
        """Worth running the same spec again in this sweep."""
        return self in (FailReason.WORKER_DIED, FailReason.OOM)

    @property
    def requeued(self) -> bool:
        """The driver stopped, not the trial: re-queued for the next run, not counted."""
        return self in (FailReason.DRIVER_DIED, FailReason.INTERRUPTED)


class FallbackReason(str, enum.Enum):
    """Why the engine asked for did not train a trial (Keras's own ``fit`` did, or, for an
    ensemble member that could not be fused, the engine a trial of its own runs on).

    Not a failure: the trial trained, on the reference engine. Stored on the trial (attribute
    ``engine_fallback``) so that the live table and ``status`` show it.
    """

    #: The engine does not cover the model or a training setting (a Conv2D, a frozen layer,
    #: a learning-rate schedule, callbacks...).
    NOT_COVERED = "not_covered"
    #: The installed Keras release is not one the engine was checked against.
    UNVERIFIED_VERSION = "unverified_version"
    #: The engine needs another Keras backend (the traced engines are TensorFlow's).
    BACKEND = "backend"
    #: The engine failed inside for a reason that is not the user's; Keras's fit reran it.
    ENGINE_ERROR = "engine_error"


class DataKind(str, enum.Enum):
    """What the data loader returned, recorded on every trial (``data_kind``) with the order
    its samples were visited in (:attr:`order`)."""

    #: ``(x_train, y_train, x_val, y_val)`` arrays: each epoch a permutation drawn from the
    #: trial's ``data_order`` seed.
    ARRAYS = "arrays"
    #: A pair of ``tf.data.Dataset``: iterated in its own order (its shuffle is the user's).
    TF_DATA = "tf.data"
    #: A pair of ``keras.utils.PyDataset``: iterated in its own order.
    PY_DATASET = "PyDataset"

    @property
    def order(self) -> str:
        """How a trial's samples are ordered with data of this kind, in words."""
        if self is DataKind.ARRAYS:
            return "seeded: a permutation per epoch from seeds.data_order"
        return "the dataset's own (not reordered; seeds.data_order unused)"


@dataclass(frozen=True)
class EngineFallback:
    """An engine declined a trial (or failed inside it) and another trained it.

    Attributes:
        engine: The engine that declined (``graph``, ``fused``, ``fused-graph``).
        reason: Why, as a kind.
        detail: Why, in words (names the layer or setting).
    """

    engine: str
    reason: FallbackReason
    detail: str

    def __str__(self) -> str:
        return f"{self.engine}: {self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class TrialSpec:
    """One trial as the driver hands it to a worker.

    Attributes:
        number: The Optuna trial number (unique within the study).
        params: Sampled and fixed values keyed by search-space path
            (``layers.hidden.units``, ``optimizer.learning_rate``, ``train.batch_size``).
        seed: The trial's root seed; every other seed is derived from it.
        attempt: 0 for the first run, 1.. for retries of the same params and seed.
        structure: For structural search (``model.<argument>`` params): the sha256 of the
            base config the factory built for this trial's arguments; None: the job's base.
        structure_config_json: That base config's JSON; a worker parses it once per
            ``structure`` and keeps it (None when the worker is known to hold it).
    """

    number: int
    params: dict[str, Any]
    seed: int
    attempt: int = 0
    structure: str | None = None
    structure_config_json: str | None = None

    def retry(self) -> TrialSpec:
        return replace(self, params=dict(self.params), attempt=self.attempt + 1)


@dataclass(frozen=True)
class PackedGroup:
    """Trials of one structure trained as one vmapped program on one worker (packed trials).

    The driver forms it (:mod:`clonesweep.orchestrator.packing`); the worker returns one
    :class:`TrialResult` per trial and reports each trial's epochs under its own number.

    Attributes:
        trials: The trials, each with its own number, params and seed. Every param not in
            ``packable`` has the same value in all of them.
        packable: The param keys that may differ between the trials (learning rate, weight
            decay, rates of plain Dropout layers): what the driver found packable in the
            sweep file and the base model.
        mode: How the worker's fused step runs the trials (``vmap``, ``map``, ``serial``).
    """

    trials: tuple[TrialSpec, ...]
    packable: tuple[str, ...]
    mode: str = "vmap"

    @property
    def number(self) -> int:
        """The group's key: its first trial's number."""
        return self.trials[0].number


@dataclass(frozen=True)
class Intermediate:
    """A per-epoch value sent to the driver for pruning."""

    number: int
    step: int
    value: float


class Reporter(Protocol):
    """What a running trial sees of the driver.

    ``report`` is called once per epoch, in order, from the thread that trains; it blocks
    until the driver has recorded the value and returns True when the trial should stop
    (pruned). Implementations must tolerate the driver being slow; they never raise for a
    pruning decision.
    """

    def report(self, step: int, value: float) -> bool: ...


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each phase of a trial on the worker."""

    build_s: float = 0.0
    train_s: float = 0.0
    eval_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.build_s + self.train_s + self.eval_s


@dataclass(frozen=True)
class TrialResult:
    """What a worker returns for a trial, whatever its outcome.

    Attributes:
        number: The trial number of the :class:`TrialSpec`.
        state: How it ended.
        value: The objective's final value (None unless COMPLETE).
        reason: Why it failed (None unless FAIL).
        message: A short human-readable explanation (and a short traceback for user errors).
        history: Per-epoch metrics, e.g. ``{"loss": [...], "val_accuracy": [...]}``.
        seeds: Every seed the trial used, keyed by where it went.
        config_hash: sha256 of the materialized model config (canonical JSON).
        config_json: The materialized model config, as built.
        param_count: Number of weights of the built model.
        timings: Build, train and evaluation seconds.
        node: Where it ran: ``host/ray-node-id`` on Ray (:func:`node_label`), the host
            name when it ran in process.
        worker: The worker (actor) that ran it.
        attempt: Which attempt of the same spec this was.
        environment: Versions the worker ran with (python, keras, its backend, numpy,
            clonesweep) and the Keras backend's name: what ``clonesweep repro`` compares.
        data_fingerprint: sha256 over the loaded training and validation arrays; for
            datasets ``spec:<sha256>`` over their structure only (element spec, length).
        data_kind: What the loader returned (arrays or datasets; see :class:`DataKind`),
            None when the trial failed before its data loaded.
        inference_latency_ms: Median milliseconds of a few ``predict_on_batch`` calls on a
            fixed batch of validation inputs after training (None unless the job asks).
        resumed_from_epoch: A retry that resumed from its checkpoint: the number of epochs
            it restored (the first epoch it trained, 0-based); None: trained from epoch 0.
        engine: The engine that trained it: ``keras`` (``model.fit``, the reference),
            ``graph`` (a traced graph shared by the worker's trials of its layer structure,
            :mod:`clonesweep.workers.engines.graphfit`), ``fused`` or ``fused-graph`` (an
            ensemble member trained in a stacked group, :mod:`clonesweep.workers.engines.fused`);
            empty when the trial failed before training.
        packed: ``(group, size)`` when the trial trained packed with others of its structure
            in one vmapped program (``engine`` ``packed``): the group's first trial number
            and how many trials it held; None when it trained alone.
        engine_fallback: Set when the engine asked for did not train the trial (another did,
            ``engine``): which engine declined or failed inside, and why. Keras's fit for a
            single trial; for an ensemble member that could not be fused, the engine its own
            trial ran on. None otherwise.
    """

    number: int
    state: TrialState
    value: float | None = None
    reason: FailReason | None = None
    message: str = ""
    history: dict[str, list[float]] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    config_hash: str = ""
    config_json: str = ""
    param_count: int = 0
    timings: Timings = field(default_factory=Timings)
    node: str = ""
    worker: str = ""
    attempt: int = 0
    environment: dict[str, str] = field(default_factory=dict)
    data_fingerprint: str = ""
    data_kind: DataKind | None = None
    inference_latency_ms: float | None = None
    resumed_from_epoch: int | None = None
    engine: str = ""
    engine_fallback: EngineFallback | None = None
    packed: tuple[int, int] | None = None

    @classmethod
    def failed(cls, spec: TrialSpec, reason: FailReason, message: str, **kw: Any) -> TrialResult:
        return cls(spec.number, TrialState.FAIL, reason=reason, message=message,
                   attempt=spec.attempt, **kw)


def node_label(node_id: str, host: str | None = None) -> str:
    """``host/node_id``: the host name people know a machine by, then Ray's node id, which
    tells apart Ray nodes that share a host. ``host`` defaults to this machine's name.

    >>> node_label("4f2a", host="gpu-3")
    'gpu-3/4f2a'
    """
    if host is None:
        import socket

        host = socket.gethostname()
    return f"{host}/{node_id}"


def node_host(node: str) -> str:
    """The host name of a :attr:`TrialResult.node` (all of it when it has no node id).

    >>> node_host("gpu-3/4f2a"), node_host("laptop")
    ('gpu-3', 'laptop')
    """
    return node.split("/", 1)[0]
