"""One ``model.fit`` call per trial, with the per-epoch work done in a Keras callback.

Calling ``fit`` and ``evaluate`` once per epoch rebuilt Keras's data adapters, iterators and
callback lists every epoch (a quarter of a short trial's time). Here a trial makes a single
``fit`` call: the training data are one epoch's batches, built once and iterated afresh by
Keras each epoch in that epoch's order; the validation set is evaluated inside ``fit``
(``validation_data``); and :class:`EpochEnd` hands each epoch's logs to the caller's hook,
which records, reports, checkpoints and decides whether to stop.

The data order stays a pure function of the trial's data-order seed: epoch ``e`` visits the
training samples in the order of the ``e``-th ``rng.permutation(n)`` of
``np.random.default_rng(seed)``, in consecutive batches (the last one partial), whether the
trial runs from epoch 0 or resumes at epoch ``e`` (see :class:`EpochOrder`).

Imports Keras: import this module only on a worker, after the backend is configured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from clonesweep.workers.arrays import length, take

__all__ = ["EpochEnd", "EpochOrder", "FitClock", "FitPlan", "epoch_orders", "fit_trial"]

#: A per-epoch hook: ``hook(epoch, logs)`` returns True to stop training after this epoch.
#: Whatever it raises ends training too, and comes back as :attr:`FitClock.error`.
EpochHook = Callable[[int, dict[str, float]], bool]


@dataclass(frozen=True)
class FitPlan:
    """What one trial's ``fit`` does.

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
    """Where a ``fit`` call's time went, and the error a hook raised (if any).

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

    :class:`EpochEnd` sets :attr:`epoch` when an epoch begins; the data read it when Keras
    iterates them for that epoch. Epochs only move forward; a resumed trial draws and drops
    the skipped epochs' permutations.
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


class EpochEnd(keras.callbacks.Callback):
    """Calls the hook at each epoch's end; times the validation passes; tells the data
    order which epoch runs.

    A hook's exception does not travel through Keras: it is kept in the clock and training
    stops as if the hook had asked to (``model.stop_training``), so ``fit`` ends normally.
    """

    def __init__(self, hook: EpochHook, clock: FitClock, order: EpochOrder) -> None:
        super().__init__()
        self._hook, self._clock, self._order = hook, clock, order
        self._test_started: float | None = None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._order.epoch = epoch

    def on_test_begin(self, logs: Any = None) -> None:
        self._test_started = time.perf_counter()

    def on_test_end(self, logs: Any = None) -> None:
        if self._test_started is not None:
            self._clock.eval_s += time.perf_counter() - self._test_started
            self._test_started = None

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        t0 = time.perf_counter()
        try:
            stop = self._hook(epoch, {k: float(v) for k, v in (logs or {}).items()})
        except BaseException as exc:  # handed back through the clock
            self._clock.error, stop = exc, True
        finally:
            self._clock.hook_s += time.perf_counter() - t0
        if stop:
            self.model.stop_training = True

    def close_open_phase(self) -> None:
        """An error inside a validation pass: count its time as evaluation."""
        self.on_test_end()


def fit_trial(model: Any, data: tuple[Any, Any, Any, Any], plan: FitPlan, hook: EpochHook,
              clock: FitClock, cache: dict[Any, Any] | None = None) -> None:
    """Train ``model`` for epochs ``plan.start_epoch .. plan.epochs-1`` in one ``fit`` call.

    The training data are one epoch's batches, which Keras iterates afresh each epoch in
    that epoch's order (so ``steps_per_execution`` never runs across two epochs).
    ``cache`` (owned by the worker, which keeps ``data`` for all its trials) keeps what is
    built from ``data`` alone for the next trials: on TensorFlow, the arrays as tensors and
    the batched validation set.

    Raises whatever ``fit`` raises (a user's layer, out of memory), with ``clock`` filled in
    up to that point; an exception of ``hook`` ends training and is left in ``clock.error``.
    """
    x_tr, y_tr, x_va, y_va = data
    cache = {} if cache is None else cache
    n = length(x_tr)
    steps = max(1, math.ceil(n / plan.batch_size))
    order = EpochOrder(plan.data_seed, n, plan.start_epoch)
    if keras.backend.backend() == "tensorflow":
        feed = _tf_batches(x_tr, y_tr, order, plan.batch_size, steps, cache)
        validation = _tf_validation(x_va, y_va, plan.validation_batch_size, cache)
    else:
        feed = _Batches(x_tr, y_tr, order, plan.batch_size, steps)
        validation = (x_va, y_va)
    callback = EpochEnd(hook, clock, order)
    t0 = time.perf_counter()
    try:
        model.fit(feed, epochs=plan.epochs, initial_epoch=plan.start_epoch,
                  validation_data=validation, validation_batch_size=plan.validation_batch_size,
                  shuffle=False, callbacks=[callback], verbose=0)
    except BaseException:
        callback.close_open_phase()
        raise
    finally:
        clock.total_s += time.perf_counter() - t0


def epoch_orders(seed: int, n: int, start: int, epochs: int) -> Iterator[np.ndarray]:
    """The sample orders of epochs ``start .. epochs-1`` (see :class:`EpochOrder`)."""
    order = EpochOrder(seed, n, start)
    for epoch in range(start, epochs):
        order.epoch = epoch
        yield order.current()


def _tf_batches(x: Any, y: Any, order: EpochOrder, batch: int, steps: int,
                cache: dict[Any, Any]) -> Any:
    """One epoch's batches as a ``tf.data`` pipeline, gathered in the graph in the order of
    the epoch running when Keras iterates it."""
    import tensorflow as tf

    # Captured by the gather function (not embedded in the graph as constants), converted
    # once per worker; one permutation per epoch crosses from Python.
    if "train" not in cache:
        cache["train"] = tf.nest.map_structure(tf.convert_to_tensor, (_tupled(x), _tupled(y)))
    arrays = cache["train"]
    indices = tf.data.Dataset.from_generator(
        lambda: iter([order.current()]), output_signature=tf.TensorSpec((None,), tf.int64))
    batches = indices.flat_map(lambda o: tf.data.Dataset.from_tensor_slices(o).batch(batch))
    gathered = batches.map(lambda idx: tf.nest.map_structure(
        lambda a: tf.gather(a, idx), arrays))
    return gathered.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)


def _tf_validation(x: Any, y: Any, batch: int, cache: dict[Any, Any]) -> Any:
    """The validation set in batches of ``batch``, as Keras would slice the arrays."""
    import tensorflow as tf

    key = ("validation", batch)
    if key not in cache:
        cache[key] = tf.data.Dataset.from_tensor_slices((_tupled(x), _tupled(y))).batch(batch)
    return cache[key]


class _Batches(keras.utils.PyDataset):
    """One epoch's batches as NumPy arrays (JAX, PyTorch), in the running epoch's order."""

    def __init__(self, x: Any, y: Any, order: EpochOrder, batch: int, steps: int) -> None:
        super().__init__()
        self._x, self._y, self._order, self._batch, self._steps = x, y, order, batch, steps

    def __len__(self) -> int:
        return self._steps

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        idx = self._order.current()[index * self._batch:(index + 1) * self._batch]
        return take(self._x, idx), take(self._y, idx)


def _tupled(x: Any) -> Any:
    """Several inputs as a tuple: ``tf.data`` would stack a list into one tensor."""
    return tuple(x) if isinstance(x, list) else x
