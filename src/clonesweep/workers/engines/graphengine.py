"""The traced functions of the graph engine: one epoch and one validation function per layer
structure, and the variables they run on (TensorFlow).

:class:`GraphEngine` is what :mod:`~clonesweep.workers.engines.graphfit` keeps per
:class:`~clonesweep.workers.engines.graphcover.Structure` on a worker: the weights and the
optimizer's slots live in variables of unspecified shape, and learning rate, dropout rates and
the optimizer's constants are tensors, so a trial with other unit counts or another learning
rate runs the same graph.

The arithmetic is Keras's own, op for op, so a trial's numbers are bitwise those of the same
trial fitted by Keras. Where this is tested with ``==`` (histories, trained weights and
optimizer state; tests/unit/workers/engines/test_graphfit_bitwise.py and test_graphfit.py):
softmax, sigmoid and linear outputs, at learning rates 1e-3 and 0.06, Adam and SGD (with and
without Nesterov momentum), Dropout, Flatten and Activation layers, a biasless output, a
one-unit layer, on Keras 3.15 with TensorFlow 2.21 on CPU. Elsewhere (other losses, GPUs,
other TensorFlow builds) the same ops run, but no test holds them to ``==``; a new Keras
release is not used at all until it is checked (:data:`VERIFIED_KERAS`). The ops: per Dense,
``matmul``, then the bias as Keras's ``ops.add`` adds it on TensorFlow (a ``bias_add``,
except for a one-unit layer, whose bias does not squeeze to a vector: a plain ``add``, whose
gradient sums in another order) and the layer's own Keras activation function; per active
Dropout, the uniform draw TensorFlow's ``stateless_dropout`` makes from the next seed of a
Keras ``SeedGenerator`` (cast as Keras casts it; each trial's generator state copied from
its own Dropout layer), kept where it is at least the rate and scaled by ``1 / (1 - rate)``
rounded once to float32, as TensorFlow does for the Python rate Keras passes; the loss and
metric objects Keras's ``compile`` resolves from the same names, a ``Mean`` loss tracker
weighted by the batch size; Adam and SGD updates written as Keras's ``update_step`` writes
them, every constant rounded to float32 as Keras rounds it. The Keras internals this takes
are in :mod:`clonesweep.workers._keras`. Initial weights come from the trial's own Keras
model, rebuilt with its seeds as before; the trained weights, optimizer state and generator
states go back into that model (and its compiled optimizer) at the end and before every
checkpoint, so saving, checkpoints and ensembles see an ordinary Keras model.

Imports Keras and TensorFlow: import this module only on a worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from clonesweep.workers import _keras
from clonesweep.workers.engines.graphcover import ONE_D_LOSSES, Structure
from clonesweep.workers.engines.graphops import apply_update, dropout, hyper_inputs, steps

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["GraphEngine"]


class GraphEngine:
    """The traced epoch and validation functions of one :class:`Structure`, and the
    variables they run on (reused by every trial of the structure on this worker)."""

    def __init__(self, structure: Structure, model: keras.Model, y_sample: Any) -> None:
        import tensorflow as tf

        self.structure = structure
        y_pred = model(np.zeros((1, *model.inputs[0].shape[1:]), dtype=np.float32))
        self._loss, self._metrics = _keras.compiled_loss_and_metrics(
            structure.loss, structure.metrics, y_sample, y_pred)
        self._tracker = keras.metrics.Mean(name="loss")
        self._names = ["loss", *structure.metrics]

        def free(rank: int) -> tf.Variable:
            # Rank known, sizes free: one trace serves every unit count.
            return tf.Variable(tf.zeros((0,) * rank), shape=tf.TensorShape([None] * rank))

        ranks = [len(v.shape) for v in model.trainable_variables]
        self.weights = [free(r) for r in ranks]
        kind = structure.optimizer
        slots = 2 if kind[0] == "Adam" else (1 if kind[1] else 0)
        self.slots = [[free(r) for r in ranks] for _ in range(slots)]
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.generators = [keras.random.SeedGenerator(0)
                           for spec in structure.layers if spec == ("Dropout", True)]
        self._epoch = tf.function(self._train_epoch, autograph=False)
        self._validate = tf.function(self._validation, autograph=False)

    # -- the graph ----------------------------------------------------------------------
    def _forward(self, x: tf.Tensor, rates: tf.Tensor, training: bool) -> tf.Tensor:
        import tensorflow as tf

        w = iter(self.weights)
        gens = iter(self.generators)
        active = 0  # the index of the next active Dropout
        for spec in self.structure.layers:
            if spec[0] == "Flatten":
                x = tf.reshape(x, (tf.shape(x)[0], -1))
            elif spec[0] == "Dense":
                x = tf.matmul(x, next(w))
                if spec[2]:
                    # Keras's ops.add on TensorFlow is a bias_add for (batch, units) +
                    # (units,), except for one unit, where the bias squeezes to nothing and
                    # it is a plain add (whose gradient sums in another order).
                    bias = next(w)
                    x = tf.add(x, bias) if spec[3] else tf.nn.bias_add(x, bias)
                x = keras.activations.get(spec[1])(x)
            elif spec[0] == "Activation":
                x = keras.activations.get(spec[1])(x)
            elif spec[0] == "Dropout" and spec[1]:
                gen = next(gens)
                if training:
                    x = dropout(x, rates[0][active], rates[1][active], gen)
                active += 1
        return x

    def _targets(self, y: tf.Tensor) -> tf.Tensor:
        """Targets of shape ``(n,)`` for a one-unit output, as Keras's loss and metrics
        expand them (``expand_dims`` on the last axis): they would do it themselves from
        static shapes, which this graph's free-shaped outputs do not have."""
        import tensorflow as tf

        one_d = self.structure.y_rank == 1 and self.structure.loss in ONE_D_LOSSES
        return tf.expand_dims(y, -1) if one_d else y

    def _loss_of(self, y: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        return tf.cast(self._loss(y, y_pred, None), tf.float32)

    def _apply(self, grads: Sequence[tf.Tensor], hyper: tf.Tensor) -> None:
        apply_update(self.structure.optimizer, self.weights, self.slots, self.iterations,
                     grads, hyper)

    def _results(self) -> list[tf.Tensor]:
        return [self._tracker.result(), *(m.result() for m in self._metrics)]

    def _reset(self) -> None:
        self._tracker.reset_state()
        for m in self._metrics:
            m.reset_state()

    def _train_epoch(self, x: tf.Tensor, y: tf.Tensor, order: tf.Tensor, batch: tf.Tensor,
                     rates: tf.Tensor, hyper: tf.Tensor) -> list[tf.Tensor]:
        import tensorflow as tf

        self._reset()
        n = tf.shape(order, out_type=tf.int64)[0]

        def step_(step: tf.Tensor) -> tuple[tf.Tensor]:
            idx = order[step * batch:tf.minimum((step + 1) * batch, n)]
            xb, yb = tf.gather(x, idx), self._targets(tf.gather(y, idx))
            with tf.GradientTape() as tape:
                y_pred = self._forward(xb, rates, training=True)
                loss = self._loss_of(yb, y_pred)
                self._tracker.update_state(loss, sample_weight=tf.shape(xb)[0])
            self._apply(tape.gradient(loss, self.weights), hyper)
            for metric in self._metrics:
                metric.update_state(yb, y_pred)
            return (step + 1,)

        steps(n, batch, step_)
        return self._results()

    def _validation(self, x: tf.Tensor, y: tf.Tensor, batch: tf.Tensor,
                    rates: tf.Tensor) -> list[tf.Tensor]:
        import tensorflow as tf

        self._reset()
        n = tf.shape(x, out_type=tf.int64)[0]

        def step_(step: tf.Tensor) -> tuple[tf.Tensor]:
            end = tf.minimum((step + 1) * batch, n)
            xb, yb = x[step * batch:end], self._targets(y[step * batch:end])
            y_pred = self._forward(xb, rates, training=False)
            self._tracker.update_state(self._loss_of(yb, y_pred),
                                       sample_weight=tf.shape(xb)[0])
            for metric in self._metrics:
                metric.update_state(yb, y_pred)
            return (step + 1,)

        steps(n, batch, step_)
        return self._results()

    # -- a trial's state in and out of the engine ------------------------------------------
    def _dropouts(self, model: keras.Model) -> list[keras.Variable]:
        return [layer for layer in model.layers
                if type(layer).__name__ == "Dropout" and layer.rate > 0]

    def _optimizer_slots(self, opt: keras.optimizers.Optimizer) -> list[list[keras.Variable]]:
        if self.structure.optimizer[0] == "Adam":
            return _keras.adam_slots(opt)
        return _keras.sgd_slots(opt)

    def load(self, model: keras.Model) -> None:
        """Take the trial's weights, optimizer state and Dropout generator states."""
        for mine, theirs in zip(self.weights, model.trainable_variables, strict=True):
            mine.assign(theirs.value)
        opt = model.optimizer
        if opt.built:
            for mine_slots, their_slots in zip(self.slots, self._optimizer_slots(opt),
                                               strict=True):
                for mine, theirs in zip(mine_slots, their_slots, strict=True):
                    mine.assign(theirs.value)
            self.iterations.assign(opt.iterations.value)
        else:
            for mine_slots in self.slots:
                for mine, var in zip(mine_slots, model.trainable_variables, strict=True):
                    mine.assign(np.zeros(var.shape, np.float32))
            self.iterations.assign(0)
        for gen, layer in zip(self.generators, self._dropouts(model), strict=True):
            gen.state.assign(_keras.dropout_seed_state(layer).value)

    def store(self, model: keras.Model) -> None:
        """Put the trained state back into the trial's Keras model and optimizer."""
        for mine, theirs in zip(self.weights, model.trainable_variables, strict=True):
            theirs.assign(mine.numpy())
        opt = model.optimizer
        if not opt.built:
            opt.build(model.trainable_variables)
        for mine_slots, their_slots in zip(self.slots, self._optimizer_slots(opt),
                                           strict=True):
            for mine, theirs in zip(mine_slots, their_slots, strict=True):
                theirs.assign(mine.numpy())
        opt.iterations.assign(self.iterations.numpy())
        for gen, layer in zip(self.generators, self._dropouts(model), strict=True):
            _keras.dropout_seed_state(layer).assign(gen.state.value)

    def hyper(self, model: keras.Model) -> tuple[Any, Any]:
        """The trial's dropout rates and optimizer constants, as graph inputs."""
        return hyper_inputs(self.structure.optimizer,
                            [float(layer.rate) for layer in self._dropouts(model)],
                            model.optimizer)

    def train_epoch(self, x: tf.Tensor, y: tf.Tensor, order: np.ndarray, batch: int,
                    rates: tf.Tensor, hyper: tf.Tensor) -> dict[str, float]:
        import tensorflow as tf

        out = self._epoch(x, y, tf.constant(order, tf.int64), tf.constant(batch, tf.int64),
                          rates, hyper)
        return {k: float(v) for k, v in zip(self._names, out, strict=True)}

    def validate(self, x: tf.Tensor, y: tf.Tensor, batch: int,
                 rates: tf.Tensor) -> dict[str, float]:
        import tensorflow as tf

        out = self._validate(x, y, tf.constant(batch, tf.int64), rates)
        return {f"val_{k}": float(v) for k, v in zip(self._names, out, strict=True)}
