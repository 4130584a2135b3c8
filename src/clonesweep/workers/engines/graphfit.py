"""One traced training graph for all of a worker's trials of one layer structure (TensorFlow).

Keras traces a new train function and a new test function for every model it fits: on a
short trial (the digits MLP, 5 epochs) that tracing is about half of the trial's time, and a
sweep pays it again for every trial although only unit counts and hyperparameters change.
Here a worker traces one *epoch* function and one *validation* function per layer structure
(:class:`Structure`: the layers' kinds and activations, which Dropouts are active, the loss,
the metrics, the optimizer's kind) and reuses them for every later trial of that structure:
the weights and the optimizer's slots live in variables of unspecified shape, and learning
rate, dropout rates and the optimizer's constants are tensors, so a trial with other unit
counts or another learning rate runs the same graph. The epoch runs in the graph (one call
per epoch, batches gathered in the epoch's order), and so does each validation pass.

The arithmetic is Keras's own, op for op, so a trial's numbers are bitwise those of the same
trial fitted by Keras where tests hold them to ``==``: the traced functions, the ops they
run and where that is tested are :mod:`~clonesweep.workers.engines.graphengine`
(:class:`GraphEngine`); this module is the engine's side of the protocol and a trial's epochs.

Covered (else :meth:`GraphFit.declines` says why, as an
:class:`~clonesweep.trials.EngineFallback`, and the trial trains on Keras's fit): Sequential
models of InputLayer, Dense, Dropout, Activation and Flatten, float32, trainable (a frozen
layer falls back), one input and one target array of the output's rank (sparse losses: one
rank less; 1-D labels for a one-unit ``binary_crossentropy`` output, expanded as Keras
expands them); an optimizer of class ``Adam`` (no amsgrad) or ``SGD``, with a constant learning
rate and no weight decay, clipping, EMA, loss scaling or gradient accumulation;
``jit_compile`` off; built-in activations; losses and metrics that Keras resolves from their
names; no ``class_weight``, sample weights or callbacks; the TensorFlow backend; a Keras
release in :data:`VERIFIED_KERAS`.

What the engine covers is :mod:`~clonesweep.workers.engines.graphcover`; the ops it shares
with the stacked engine are :mod:`~clonesweep.workers.engines.graphops`.

Imports Keras and TensorFlow: import this module only on a worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras

from clonesweep.trials import EngineFallback
from clonesweep.workers._keras import VERIFIED_KERAS
from clonesweep.workers.engines.base import (
    EpochHook,
    EpochOrder,
    FitClock,
    FitPlan,
    TrainData,
    TrialTraining,
    arrays_only,
)
from clonesweep.workers.engines.feeds import FeedCache
from clonesweep.workers.engines.graphcover import (
    Structure,
    graph_declines,
    reuse_blocker,
    structure_of,
)
from clonesweep.workers.engines.graphengine import GraphEngine
from clonesweep.workers.engines.graphops import graph_arrays

__all__ = ["VERIFIED_KERAS", "GraphEngine", "GraphFit", "Structure", "fit_trial_reused",
           "graph_declines", "reuse_blocker", "structure_of"]


class GraphFit:
    """The traced-graph engine: one graph per layer structure, reused across trials."""

    name = "graph"

    def declines(self, trial: TrialTraining) -> EngineFallback | None:
        return graph_declines(trial.model, trial.data, trial.training, self.name,
                              has_callbacks=bool(trial.callbacks), one_d_targets=True)

    def fit(self, trial: TrialTraining) -> None:
        tr, data = trial.training, arrays_only(trial.data, self.name)
        structure = structure_of(trial.model, data, tr.loss, tr.metrics)
        fit_trial_reused(trial.model, data, trial.plan, trial.hook, trial.clock,
                         trial.feeds, structure, trial.before_save)


def fit_trial_reused(model: keras.Model, data: TrainData, plan: FitPlan, hook: EpochHook,
                     clock: FitClock, feeds: FeedCache, structure: Structure,
                     before_save: list[Callable[[], None]] | None = None) -> None:
    """Train ``model`` for epochs ``plan.start_epoch .. plan.epochs-1`` on the structure's
    traced graph (built on the first trial of ``structure``, kept in ``feeds``).

    Same contract as :func:`clonesweep.workers.engines.kerasfit.fit_trial`: the hook runs after
    each epoch's validation, a hook's exception ends training and is left in ``clock.error``;
    the model holds the trained state when this returns or raises. ``before_save`` gets a
    function that copies the current state into the model (for a checkpoint mid-trial).
    """
    engine = feeds.graph_engine(structure, lambda: GraphEngine(structure, model, data.y[:1]))
    xt, yt, xv, yv = graph_arrays(feeds, data)
    engine.load(model)
    if before_save is not None:
        before_save.append(lambda: engine.store(model))
    rates, hyper = engine.hyper(model)
    order = EpochOrder(plan.data_seed, len(data.x), plan.start_epoch)
    t0 = time.perf_counter()
    try:
        for epoch in range(plan.start_epoch, plan.epochs):
            order.epoch = epoch
            logs = engine.train_epoch(xt, yt, order.current(), plan.batch_size, rates, hyper)
            t1 = time.perf_counter()
            logs.update(engine.validate(xv, yv, plan.validation_batch_size, rates))
            t2 = time.perf_counter()
            clock.eval_s += t2 - t1
            try:
                stop = hook(epoch, logs)
            except BaseException as exc:  # handed back through the clock
                clock.error, stop = exc, True
            finally:
                clock.hook_s += time.perf_counter() - t2
            if stop:
                break
    finally:
        clock.total_s += time.perf_counter() - t0
        engine.store(model)
