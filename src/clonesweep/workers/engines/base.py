"""The engine contract: what the runner hands an engine for one trial, and what it expects.

An :class:`Engine` trains one compiled Keras model, described by a :class:`TrialTraining`
(the model, the data, the plan, the per-epoch hook, the worker's :class:`FeedCache`). The
runner (:mod:`clonesweep.workers.runner`) asks the engine chosen for the sweep first:

1. :meth:`Engine.declines` says, without training, whether the engine covers the trial; a
   non-None answer is an :class:`~clonesweep.trials.EngineFallback` and the trial trains on
   Keras's fit (:class:`~clonesweep.workers.engines.kerasfit.KerasFit`, the reference, which
   declines nothing), with that fallback on its result.
2. :meth:`Engine.fit` trains epochs ``plan.start_epoch .. plan.epochs - 1``, calling the hook
   after each epoch's validation pass. A hook's exception ends training and is left in
   ``clock.error`` (never raised through the engine); the model holds the trained state
   when ``fit`` returns or raises. Anything else ``fit`` raises is the engine's or the
   trial's: the runner fails the trial for an out-of-memory error, and otherwise reruns the
   trial from a fresh rebuild on Keras's fit, which decides whether the error was the
   user's (it fails there too) or the engine's (it does not: ``engine_error`` fallback).
   So an engine's own error never fails a trial.

One trial at a time per worker; engines keep what they build in the :class:`FeedCache`.
Fused ensemble groups (:mod:`clonesweep.workers.engines.jaxgroup` on JAX,
:mod:`clonesweep.workers.engines.fused` on TensorFlow) train several models at once and have
their own entry point, ``run_group``, with the same fallback rule and result fields.

No Keras import here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from clonesweep.spec.model import TrainingSpec
from clonesweep.trials import EngineFallback
from clonesweep.workers.arrays import length
from clonesweep.workers.engines.feeds import FeedCache
from clonesweep.workers.streams import StreamData

if TYPE_CHECKING:
    import keras

__all__ = ["Engine", "EpochHook", "EpochOrder", "FitClock", "FitPlan", "TrainData",
           "TrialTraining", "arrays_only", "epoch_orders"]

#: A per-epoch hook: ``hook(epoch, logs)`` returns True to stop training after this epoch.
#: Whatever it raises ends training too, and comes back as :attr:`FitClock.error`.
EpochHook = Callable[[int, dict[str, float]], bool]


@dataclass(frozen=True)
class TrainData:
    """What the data loader returned, once per worker.

    Attributes:
        x, y: Training inputs and targets (arrays, or tuples / lists / dicts of arrays).
        x_val, y_val: Validation inputs and targets.
        sample_weight: One weight per training sample (the loader's fifth item), or None.
        val_sample_weight: One weight per validation sample (its sixth item), or None.
    """

    x: Any
    y: Any
    x_val: Any
    y_val: Any
    sample_weight: np.ndarray | None = None
    val_sample_weight: np.ndarray | None = None

    @classmethod
    def of(cls, loaded: Any) -> TrainData:
        """From a loader's return value: ``(x, y, x_val, y_val)``, optionally followed by
        the training and the validation sample weights.

        Raises:
            TypeError: anything else, saying what was received.
        """
        if not isinstance(loaded, (tuple, list)) or len(loaded) not in (4, 5, 6):
            got = type(loaded).__name__ + (f" of length {len(loaded)}"
                                           if isinstance(loaded, (tuple, list)) else "")
            raise TypeError("expected (x_train, y_train, x_val, y_val), optionally followed "
                            f"by sample_weight and val_sample_weight; got {got}")
        items = list(loaded) + [None] * (6 - len(loaded))
        weights = [None if w is None else np.asarray(w, np.float32) for w in items[4:]]
        for w, x, name in ((weights[0], items[0], "sample_weight"),
                           (weights[1], items[2], "val_sample_weight")):
            if w is not None and (w.ndim != 1 or len(w) != length(x)):
                raise TypeError(f"{name} must hold one number per sample ({length(x)}); "
                                f"got shape {w.shape}")
        return cls(items[0], items[1], items[2], items[3], weights[0], weights[1])

    @property
    def arrays(self) -> tuple[Any, ...]:
        """Everything loaded, in the loader's order (the sample weights when present)."""
        extra = [w for w in (self.sample_weight, self.val_sample_weight) if w is not None]
        return (self.x, self.y, self.x_val, self.y_val, *extra)

    @property
    def weighted(self) -> bool:
        return self.sample_weight is not None or self.val_sample_weight is not None


def arrays_only(data: TrainData | StreamData, engine: str) -> TrainData:
    """``data`` as arrays, for an engine that takes nothing else (and declined datasets).

    Raises:
        TypeError: ``data`` are datasets (the engine's own error: Keras's fit reruns it).
    """
    if isinstance(data, StreamData):
        raise TypeError(f"the {engine} engine takes arrays, not {data.kind.value} datasets")
    return data


@dataclass(frozen=True)
class FitPlan:
    """What one trial's training does.

    Attributes:
        epochs: The trial's total number of epochs.
        batch_size: Training batch size.
        validation_batch_size: Batch size of the validation pass after each epoch.
        data_seed: The trial's data-order seed.
        start_epoch: The first epoch to train (a resumed trial skips the ones it restored).
    """

    epochs: int
    batch_size: int
    validation_batch_size: int
    data_seed: int
    start_epoch: int = 0


@dataclass
class FitClock:
    """Where a training call's time went, and the error a hook raised (if any).

    ``train_s`` excludes the validation passes (``eval_s``) and the hooks (``hook_s``: the
    driver's answer to each report, checkpoint writes).
    """

    total_s: float = 0.0
    eval_s: float = 0.0
    hook_s: float = 0.0
    error: BaseException | None = field(default=None, repr=False)

    @property
    def train_s(self) -> float:
        return max(0.0, self.total_s - self.eval_s - self.hook_s)


class EpochOrder:
    """The sample order of the epoch being trained: the ``e``-th ``rng.permutation(n)`` of
    ``np.random.default_rng(seed)`` for epoch ``e``, whichever epoch training starts at.

    The engine sets :attr:`epoch` when an epoch begins; the data read it when they are
    iterated for that epoch. Epochs only move forward; a resumed trial draws and drops the
    skipped epochs' permutations.
    """

    def __init__(self, seed: int, n: int, epoch: int = 0) -> None:
        self.epoch = epoch
        self._rng, self._n = np.random.default_rng(seed), n
        self._drawn, self._order = -1, np.arange(n)

    def current(self) -> np.ndarray:
        while self._drawn < self.epoch:
            self._order = self._rng.permutation(self._n)
            self._drawn += 1
        return self._order


def epoch_orders(seed: int, n: int, start: int, epochs: int) -> Iterator[np.ndarray]:
    """The sample orders of epochs ``start .. epochs-1`` (see :class:`EpochOrder`)."""
    order = EpochOrder(seed, n, start)
    for epoch in range(start, epochs):
        order.epoch = epoch
        yield order.current()


@dataclass(frozen=True)
class TrialTraining:
    """One trial's training, as the runner hands it to an engine.

    Attributes:
        model: The rebuilt Keras model, compiled with the trial's optimizer.
        data: The worker's data: arrays, or a pair of datasets (Keras's fit alone takes
            those; every other engine declines them).
        plan: Epochs, batch sizes, the data-order seed, the first epoch.
        training: The sweep's training settings (loss, metrics, class weights...).
        hook: Called after each epoch (records, reports, checkpoints; see ``epochs.py``).
        clock: Filled in by the engine.
        feeds: The worker's cache of what is built from the data.
        callbacks: The trial's own instances of the sweep file's Keras callbacks.
        before_save: An engine that keeps the trained state outside the model adds a
            function here that copies it in (run before a checkpoint reads the model).
    """

    model: keras.Model
    data: TrainData | StreamData
    plan: FitPlan
    training: TrainingSpec
    hook: EpochHook
    clock: FitClock
    feeds: FeedCache
    callbacks: tuple[keras.callbacks.Callback, ...] = ()
    before_save: list[Callable[[], None]] = field(default_factory=list)


class Engine(Protocol):
    """Trains one trial's compiled model (see the module docstring for the contract)."""

    #: The engine's name, recorded on every trial it trains (``TrialResult.engine``).
    name: str

    def declines(self, trial: TrialTraining) -> EngineFallback | None:
        """Why this engine does not take the trial, or None when it does. Never raises."""
        ...

    def fit(self, trial: TrialTraining) -> None:
        """Train the trial's epochs; see the module docstring for what it may raise."""
        ...
