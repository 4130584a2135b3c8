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
from typing import Any

import keras

from clonesweep.trials import EngineFallback
from clonesweep.workers.arrays import length, take
from clonesweep.workers.engines.base import (
    EpochHook,
    EpochOrder,
    FitClock,
    FitPlan,
    TrainData,
    TrialTraining,
    epoch_orders,
)
from clonesweep.workers.engines.feeds import FeedCache
from clonesweep.workers.streams import StreamData, batched

__all__ = ["EpochEnd", "EpochOrder", "FitClock", "FitPlan", "KerasFit", "epoch_orders",
           "fit_stream", "fit_trial"]


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

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._order.epoch = epoch

    def on_test_begin(self, logs: dict[str, float] | None = None) -> None:
        self._test_started = time.perf_counter()

    def on_test_end(self, logs: dict[str, float] | None = None) -> None:
        if self._test_started is not None:
            self._clock.eval_s += time.perf_counter() - self._test_started
            self._test_started = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
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


class KerasFit:
    """Keras's own ``fit``: the reference engine, which takes every trial."""

    name = "keras"

    def declines(self, trial: TrialTraining) -> EngineFallback | None:
        return None

    def fit(self, trial: TrialTraining) -> None:
        if isinstance(trial.data, StreamData):
            fit_stream(trial.model, trial.data, trial.plan, trial.hook, trial.clock,
                       class_weight=trial.training.class_weight, callbacks=trial.callbacks)
            return
        fit_trial(trial.model, trial.data, trial.plan, trial.hook, trial.clock, trial.feeds,
                  class_weight=trial.training.class_weight, callbacks=trial.callbacks)


def fit_stream(model: keras.Model, data: StreamData, plan: FitPlan, hook: EpochHook,
               clock: FitClock, *, class_weight: dict[int, float] | None = None,
               callbacks: tuple[Any, ...] = ()) -> None:
    """Train on a pair of datasets in one ``fit`` call, in the datasets' own order.

    An unbatched tf.data dataset is batched here (training by ``plan.batch_size``,
    validation by ``plan.validation_batch_size``); a batched one, or a PyDataset, keeps its
    batches. Nothing is reordered (``shuffle=False``): see :mod:`clonesweep.workers.streams`.
    Raises and fills ``clock`` as :func:`fit_trial` does.
    """
    train, val = data.train, data.val
    if not batched(train, model):
        train = train.batch(plan.batch_size)
    if not batched(val, model):
        val = val.batch(plan.validation_batch_size)
    order = EpochOrder(plan.data_seed, 0, plan.start_epoch)  # only told the epoch: unused
    callback = EpochEnd(hook, clock, order)
    t0 = time.perf_counter()
    try:
        model.fit(train, epochs=plan.epochs, initial_epoch=plan.start_epoch,
                  validation_data=val, shuffle=False, callbacks=[*callbacks, callback],
                  verbose=0, class_weight=class_weight)
    except BaseException:
        callback.close_open_phase()
        raise
    finally:
        clock.total_s += time.perf_counter() - t0


def fit_trial(model: keras.Model, data: TrainData, plan: FitPlan, hook: EpochHook, clock: FitClock,
              feeds: FeedCache | None = None, *, class_weight: dict[int, float] | None = None,
              callbacks: tuple[Any, ...] = ()) -> None:
    """Train ``model`` for epochs ``plan.start_epoch .. plan.epochs-1`` in one ``fit`` call.

    The training data are one epoch's batches, which Keras iterates afresh each epoch in
    that epoch's order (so ``steps_per_execution`` never runs across two epochs), with the
    sample weights when the loader gave some. ``feeds`` (owned by the worker, which keeps
    ``data`` for all its trials) keeps what is built from ``data`` alone for the next
    trials: on TensorFlow, the arrays as tensors and the batched validation set.
    ``callbacks``: the user's, called before the hook at each epoch's end (so an
    EarlyStopping's decision is taken by the time the hook records the epoch).

    Raises whatever ``fit`` raises (a user's layer, out of memory), with ``clock`` filled in
    up to that point; an exception of ``hook`` ends training and is left in ``clock.error``.
    """
    feeds = FeedCache() if feeds is None else feeds
    n = length(data.x)
    steps = max(1, math.ceil(n / plan.batch_size))
    order = EpochOrder(plan.data_seed, n, plan.start_epoch)
    train = (data.x, data.y) if data.sample_weight is None else \
        (data.x, data.y, data.sample_weight)
    val = (data.x_val, data.y_val) if data.val_sample_weight is None else \
        (data.x_val, data.y_val, data.val_sample_weight)
    if keras.backend.backend() == "tensorflow" or _own_fit(model):
        feed = _tf_batches(train, order, plan.batch_size, steps, feeds)
        validation = _tf_validation(val, plan.validation_batch_size, feeds)
    else:
        feed = _Batches(train, order, plan.batch_size, steps)
        validation = val
    callback = EpochEnd(hook, clock, order)
    t0 = time.perf_counter()
    try:
        model.fit(feed, epochs=plan.epochs, initial_epoch=plan.start_epoch,
                  validation_data=validation, validation_batch_size=plan.validation_batch_size,
                  shuffle=False, callbacks=[*callbacks, callback], verbose=0,
                  class_weight=class_weight)
    except BaseException:
        callback.close_open_phase()
        raise
    finally:
        clock.total_s += time.perf_counter() - t0


def _own_fit(model: keras.Model) -> bool:
    """Whether ``model``'s class has a ``fit`` of its own that reads ``x`` its own way, and
    TensorFlow is installed: keras-hub's task models (``PipelineModel``) take tf.data (or
    grain) datasets and arrays, not the PyDataset the other backends are fed with here, and
    slice validation arrays by 32 whatever ``validation_batch_size`` says. They get the
    tf.data feed on every backend (the same batches, in the same order)."""
    import importlib.util

    return type(model).fit is not keras.Model.fit and \
        importlib.util.find_spec("tensorflow") is not None


def _tf_batches(arrays: tuple[Any, ...], order: EpochOrder, batch: int, steps: int,
                feeds: FeedCache) -> Any:
    """One epoch's batches as a ``tf.data`` pipeline, gathered in the graph in the order of
    the epoch running when Keras iterates it."""
    import tensorflow as tf

    # Captured by the gather function (not embedded in the graph as constants), converted
    # once per worker; one permutation per epoch crosses from Python.
    tensors = feeds.train_tensors(lambda: tf.nest.map_structure(
        tf.convert_to_tensor, tuple(_tupled(a) for a in arrays)))
    indices = tf.data.Dataset.from_generator(
        lambda: iter([order.current()]), output_signature=tf.TensorSpec((None,), tf.int64))
    batches = indices.flat_map(lambda o: tf.data.Dataset.from_tensor_slices(o).batch(batch))
    gathered = batches.map(lambda idx: tf.nest.map_structure(
        lambda a: tf.gather(a, idx), tensors))
    return gathered.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)


def _tf_validation(arrays: tuple[Any, ...], batch: int, feeds: FeedCache) -> Any:
    """The validation set in batches of ``batch``, as Keras would slice the arrays."""
    import tensorflow as tf

    return feeds.validation(batch, lambda: tf.data.Dataset.from_tensor_slices(
        tuple(_tupled(a) for a in arrays)).batch(batch))


class _Batches(keras.utils.PyDataset):
    """One epoch's batches as NumPy arrays (JAX, PyTorch), in the running epoch's order."""

    def __init__(self, arrays: tuple[Any, ...], order: EpochOrder, batch: int,
                 steps: int) -> None:
        super().__init__()
        self._arrays, self._order, self._batch, self._steps = arrays, order, batch, steps

    def __len__(self) -> int:
        return self._steps

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        idx = self._order.current()[index * self._batch:(index + 1) * self._batch]
        return tuple(take(a, idx) for a in self._arrays)


def _tupled(x: Any) -> Any:
    """Several inputs as a tuple: ``tf.data`` would stack a list into one tensor."""
    return tuple(x) if isinstance(x, list) else x
