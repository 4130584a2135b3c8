"""Fused members on one traced graph per layer structure (TensorFlow): the stacked form of
:mod:`clonesweep.workers.engines.graphfit`.

The Keras form of fused training (:func:`clonesweep.workers.engines.fused.build_fused`) traces a new
train function for every group; here a worker traces one *epoch* function and one
*prediction* function per :class:`~clonesweep.workers.engines.graphfit.Structure` and reuses them
for every later group of that structure, whatever its member count, unit counts, dropout
rate or learning rate: every weight, optimizer slot and Dropout generator state is a
variable stacked along a leading member axis, of unspecified shape.

Per member ``k`` the arithmetic is that of its separate training: a Dense is a batched
``matmul`` of member ``k``'s batch (its own data order) by member ``k``'s kernel, then its
bias and the layer's own Keras activation; a Dropout keeps where the uniform draw from
member ``k``'s own generator state is at least the rate (the draw its separate layer makes,
one ``stateless_uniform`` per member) and scales by ``1 / (1 - rate)`` rounded to float32;
the loss is the sum over members of each member's batch-mean loss, so member ``k``'s
gradient is its own; Adam and SGD update every stacked variable elementwise, as Keras
updates each member's. Batched kernels may add in another order than the separate ones:
results agree to float32 rounding, not bitwise (tests/unit/workers/engines/test_fusedgraph.py).

Imports Keras and TensorFlow: import this module only on a worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from clonesweep.workers import _keras
from clonesweep.workers.engines.graphcover import Structure
from clonesweep.workers.engines.graphops import apply_update, hyper_inputs, steps

__all__ = ["StackedEngine"]


class StackedEngine:
    """The traced epoch and prediction functions of one structure's fused groups, and the
    stacked variables they run on."""

    def __init__(self, structure: Structure, member: keras.Model) -> None:
        import tensorflow as tf

        self.structure = structure
        self._loss = keras.losses.get(structure.loss)  # per sample, as compile's wrapper

        def free(rank: int, dtype: Any = tf.float32) -> Any:
            return tf.Variable(tf.zeros((0,) * rank, dtype),
                               shape=tf.TensorShape([None] * rank))

        ranks = [len(v.shape) + 1 for v in member.trainable_variables]
        self.weights = [free(r) for r in ranks]
        kind = structure.optimizer
        slots = 2 if kind[0] == "Adam" else (1 if kind[1] else 0)
        self.slots = [[free(r) for r in ranks] for _ in range(slots)]
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.generators = [free(2, tf.int64) for spec in structure.layers
                           if spec == ("Dropout", True)]
        # Shapes left free (member count, data length, batch), so one trace serves all.
        def spec(rank: int, dtype_name: str) -> Any:
            dtype = tf.float32 if dtype_name.startswith("float") else tf.as_dtype(dtype_name)
            return tf.TensorSpec([None] * rank, dtype)

        x = spec(structure.input_rank, structure.x_dtype)
        y = spec(structure.y_rank, structure.y_dtype)
        scalar = tf.TensorSpec([], tf.int64)
        # One function per epoch: the training steps, then every member's predictions on
        # the validation inputs (one trace and one first call per worker, not two).
        self._epoch = tf.function(self._train_epoch, autograph=False, input_signature=[
            x, y, tf.TensorSpec([None, None], tf.int64), scalar,
            tf.TensorSpec([2, None], tf.float32), tf.TensorSpec([None], tf.float32), x, scalar])

    # -- the graph ----------------------------------------------------------------------
    def _forward(self, x: Any, rates: Any, training: bool) -> Any:
        """``x``: ``(members, batch, ...)``; each member's own batch."""
        import tensorflow as tf

        w = iter(self.weights)
        gens = iter(self.generators)
        dropout = 0
        for spec in self.structure.layers:
            if spec[0] == "Flatten":
                shape = tf.shape(x)
                x = tf.reshape(x, (shape[0], shape[1], -1))
            elif spec[0] == "Dense":
                x = tf.matmul(x, next(w))
                if spec[2]:
                    x = x + next(w)[:, None, :]
                x = keras.activations.get(spec[1])(x)
            elif spec[0] == "Activation":
                x = keras.activations.get(spec[1])(x)
            elif spec[0] == "Dropout" and spec[1]:
                gen = next(gens)
                if training:
                    seeds = gen.value() * 1
                    gen.assign(gen + tf.constant([[0, 1]], tf.int64))
                    member_shape = tf.shape(x)[1:]
                    noise = tf.map_fn(
                        lambda s, shape=member_shape, dtype=x.dtype:
                            tf.random.stateless_uniform(shape, seed=_keras.cast_seed(s),
                                                        dtype=dtype),
                        seeds, fn_output_signature=x.dtype)
                    x = tf.where(noise >= rates[0][dropout],
                                 tf.multiply(x, rates[1][dropout]), tf.zeros((), x.dtype))
                dropout += 1
        return x

    def _train_epoch(self, x: Any, y: Any, orders: Any, batch: Any, rates: Any,
                     hyper: Any, x_val: Any, val_batch: Any) -> tuple[Any, Any]:
        """One epoch of every member (``orders``: ``(members, n)``, each its own order), then
        their predictions on ``x_val``: the summed loss and ``(members, n_val, out)``."""
        import tensorflow as tf

        n = tf.shape(orders, out_type=tf.int64)[1]

        def step_(step: Any, total: Any) -> tuple[Any, Any]:
            idx = orders[:, step * batch:tf.minimum((step + 1) * batch, n)]
            xb, yb = tf.gather(x, idx), tf.gather(y, idx)
            members, size = tf.shape(idx)[0], tf.shape(idx)[1]
            with tf.GradientTape() as tape:
                y_pred = self._forward(xb, rates, training=True)
                flat_true = tf.reshape(yb, tf.concat([[members * size], tf.shape(yb)[2:]], 0))
                flat_pred = tf.reshape(y_pred, tf.concat([[members * size],
                                                          tf.shape(y_pred)[2:]], 0))
                per_sample = tf.reshape(tf.cast(self._loss(flat_true, flat_pred), tf.float32),
                                        (members, size))
                # Each member's batch mean, summed: member k's gradient is its own.
                loss = tf.reduce_sum(tf.reduce_sum(per_sample, axis=1)
                                     / tf.cast(size, tf.float32))
            apply_update(self.structure.optimizer, self.weights, self.slots, self.iterations,
                         tape.gradient(loss, self.weights), hyper)
            return step + 1, total + loss

        (total,) = steps(n, batch, step_, (tf.constant(0.0),))
        with tf.control_dependencies([total]):  # predict with the epoch's final weights
            return total, self._predictions(x_val, val_batch, tf.shape(orders)[0])

    def _predictions(self, x: Any, batch: Any, members: Any) -> Any:
        """Every member's inference-mode outputs on ``x`` (shared), ``(members, n, out)``."""
        import tensorflow as tf

        n = tf.shape(x, out_type=tf.int64)[0]
        count = tf.cast((n + batch - 1) // batch, tf.int32)

        def step_(step: Any, out: Any) -> tuple[Any, Any]:
            xb = x[step * batch:tf.minimum((step + 1) * batch, n)]
            xk = tf.repeat(xb[None], members, axis=0)
            return step + 1, out.write(tf.cast(step, tf.int32), tf.transpose(
                self._forward(xk, None, training=False), (1, 0, 2)))

        (out,) = steps(n, batch, step_,
                       (tf.TensorArray(tf.float32, size=count, infer_shape=False),))
        return tf.transpose(out.concat(), (1, 0, 2))

    # -- a group's state in and out of the engine ------------------------------------------
    def load(self, members: Sequence[keras.Model]) -> None:
        """Stack the members' initial weights and Dropout seeds; zero the optimizer."""
        for i, mine in enumerate(self.weights):
            mine.assign(np.stack([m.trainable_variables[i].numpy() for m in members]))
        for slots in self.slots:
            for mine, ref in zip(slots, self.weights, strict=True):
                mine.assign(np.zeros(ref.numpy().shape, np.float32))  # declared: free
        self.iterations.assign(0)
        dropouts = [[layer for layer in m.layers
                     if type(layer).__name__ == "Dropout" and layer.rate > 0] for m in members]
        for j, gen in enumerate(self.generators):
            gen.assign(np.stack([_keras.dropout_seed_state(d[j]).numpy() for d in dropouts]))

    def store(self, members: Sequence[keras.Model]) -> None:
        """Put each member's trained weights back into its own model."""
        for i, mine in enumerate(self.weights):
            stacked = mine.numpy()
            for k, member in enumerate(members):
                member.trainable_variables[i].assign(stacked[k])

    def hyper(self, member: keras.Model, optimizer: keras.optimizers.Optimizer) -> tuple[Any, Any]:
        return hyper_inputs(self.structure.optimizer,
                            [float(layer.rate) for layer in member.layers
                             if type(layer).__name__ == "Dropout" and layer.rate > 0],
                            optimizer)

    def train_epoch(self, x: Any, y: Any, orders: np.ndarray, batch: int, rates: Any,
                    hyper: Any, x_val: Any, val_batch: int) -> tuple[float, np.ndarray]:
        """One epoch; the summed training loss and the members' validation predictions,
        ``(members, n_val, ...)``, made with the weights the epoch ended with."""
        import tensorflow as tf

        # Grappler's passes cost more than they save on these small graphs (measured on
        # the digits MLP, 16 members: bench/README.md); stacked members agree with separate
        # ones to float32 rounding only, with or without it.
        with _keras.without_grappler():
            total, preds = self._epoch(x, y, tf.constant(orders, tf.int64),
                                       tf.constant(batch, tf.int64), rates, hyper, x_val,
                                       tf.constant(val_batch, tf.int64))
        return float(total), np.asarray(preds)
