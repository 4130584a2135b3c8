"""The ops both traced engines build their graphs from, written as Keras writes them on
TensorFlow: Dropout's draw, Adam's and SGD's updates, the graph inputs a trial's rates and
constants become, and the batch loop (see :mod:`~clonesweep.workers.engines.graphfit` for why
each is op for op). Imports Keras: import this module only on a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from clonesweep.workers import _keras
from clonesweep.workers.engines.base import TrainData
from clonesweep.workers.engines.feeds import FeedCache

__all__ = ["apply_update", "dropout", "graph_arrays", "hyper_inputs", "steps"]


def _f32(value: float) -> Any:
    """A Python float rounded to float32, as Keras rounds a constant it multiplies a
    float32 tensor by."""
    import tensorflow as tf

    return tf.constant(np.float32(value))


def dropout(x: Any, rate: Any, scale: Any, gen: Any) -> Any:
    """``stateless_dropout`` as TensorFlow computes it for a Python ``rate`` (Keras passes
    one): ``x`` times ``1 / (1 - rate)`` rounded once to float32, kept where a uniform draw
    from the generator's next seed is at least ``rate``. A tensor rate would divide by
    ``1 - rate`` in float32 instead, which rounds differently."""
    import tensorflow as tf

    shape = tf.shape(x)
    noise = tf.random.stateless_uniform(shape, seed=_keras.cast_seed(gen.next()), dtype=x.dtype)
    return tf.where(noise >= rate, tf.multiply(x, scale), tf.zeros((), x.dtype))


def apply_update(kind: tuple[Any, ...], weights: Sequence[Any], slots: Sequence[Any],
                 iterations: Any, grads: Sequence[Any], hyper: Any) -> None:
    """One optimizer step on ``weights`` (Adam or SGD, as Keras's ``update_step`` writes
    it); elementwise, so stacked members' variables take each member's own step."""
    import tensorflow as tf

    if kind[0] == "Adam":
        lr, beta_1, beta_2, one_minus_1, one_minus_2, epsilon = (hyper[i] for i in range(6))
        local_step = tf.cast(iterations + 1, tf.float32)
        beta_1_power = tf.pow(beta_1, local_step)
        beta_2_power = tf.pow(beta_2, local_step)
        for var, g, m, v in zip(weights, grads, *slots, strict=True):
            alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
            m.assign_add(tf.multiply(tf.subtract(g, m), one_minus_1))
            v.assign_add(tf.multiply(tf.subtract(tf.square(g), v), one_minus_2))
            var.assign_sub(tf.divide(tf.multiply(m, alpha), tf.add(tf.sqrt(v), epsilon)))
    else:
        lr, momentum = hyper[0], hyper[1]
        for i, (var, g) in enumerate(zip(weights, grads, strict=True)):
            if not slots:
                var.assign_sub(tf.multiply(g, lr))
                continue
            m = slots[0][i]
            m.assign(tf.subtract(tf.multiply(m, momentum), tf.multiply(g, lr)))
            if kind[2]:
                var.assign_add(tf.subtract(tf.multiply(m, momentum), tf.multiply(g, lr)))
            else:
                var.assign_add(m)
    iterations.assign_add(1)


def hyper_inputs(kind: tuple[Any, ...], dropout_rates: Sequence[float],
                 optimizer: keras.optimizers.Optimizer) -> tuple[Any, Any]:
    """The active Dropouts' rates (and their float32 ``1 / (1 - rate)``) and the optimizer's
    learning rate and constants, as graph inputs."""
    import tensorflow as tf

    dropped = list(dropout_rates) or [0.0]
    rates = tf.constant(np.array([dropped, [1 / (1 - r) for r in dropped]], np.float32))
    opt = optimizer
    variable = _keras.constant_learning_rate(opt)
    if variable is None:  # graphcover declines a schedule: this is the engine's own error
        raise ValueError("the traced graph takes a constant learning rate, not a schedule")
    lr = variable.value
    if kind[0] == "Adam":
        values = [lr, _f32(opt.beta_1), _f32(opt.beta_2), _f32(1 - opt.beta_1),
                  _f32(1 - opt.beta_2), _f32(opt.epsilon)]
    else:
        values = [lr, _f32(opt.momentum)]
    return rates, tf.stack([tf.cast(v, tf.float32) for v in values])


def graph_arrays(feeds: FeedCache, data: TrainData) -> tuple[Any, ...]:
    """The data as tensors (floats as float32), converted once per worker."""
    import tensorflow as tf

    return feeds.graph_arrays(lambda: tuple(
        tf.convert_to_tensor(a.astype(np.float32) if a.dtype.kind == "f" else a)
        for a in (data.x, data.y, data.x_val, data.y_val)))


def steps(n: Any, batch: Any, body: Callable[..., tuple[Any, ...]],
          state: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """Run ``body(step, *state) -> (step + 1, *state)`` for each batch of ``n`` samples, as
    one graph loop written out (the engines' functions are traced without AutoGraph, whose
    conversion of every function the loop calls was ~80% of a first trace: 1.6 s of a
    stacked epoch's trace on the digits MLP). Returns the final ``state``."""
    import tensorflow as tf

    last = (n + batch - 1) // batch
    out = tf.while_loop(lambda step, *rest: step < last, body,
                        (tf.constant(0, tf.int64), *state))
    return tuple(out[1:])
