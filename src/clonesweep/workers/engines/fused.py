"""Fused training: K seeded members of one config trained as one stacked Keras model.

Each member is first rebuilt on its own (:func:`~clonesweep.workers.rebuild.rebuild`, its own
member seed, so every initializer and Dropout has the seed it has when trained alone). The
fused model stacks their weights along a member axis: a Dense kernel becomes ``(K, in, out)``
and the layer one ``einsum``; the input is ``(batch, K, features...)``, slice ``k`` holding
member ``k``'s batch from its own data order; the loss is the sum over members of each
member's mean loss, so member ``k``'s gradient is exactly the gradient of its own loss. No
weight is shared. Initial weights are copied from the separately built members (bitwise
equal); a Dropout draws member ``k``'s mask from a ``SeedGenerator`` seeded with member
``k``'s own Dropout seed, on a slice shaped like the separate layer's input, so the masks are
those the separate layers draw. The graph stays the size of one member's whatever ``K``.

Covered layers (of a Sequential model): InputLayer, Dense, Dropout, Activation, Flatten.
:func:`fusion_blocker` says, from the materialized config alone, why a config cannot be
fused (the driver then trains the members separately and says so); :class:`FusionUnsupported`
is raised at build time for what only shapes reveal.

Trained members are pulled back out (:func:`extract_members`) into their separately built
models, which then predict as the fused model does. The stacked Keras model is in
:mod:`~clonesweep.workers.engines.stacked`, the members' metrics in
:mod:`~clonesweep.workers.engines.fusedmetrics`.

On TensorFlow, with ``training.reuse_graphs`` on and members the graph engines cover
(:func:`~clonesweep.workers.engines.graphcover.graph_declines`), :func:`train_fused` runs the
same stacked arithmetic on :class:`~clonesweep.workers.engines.fusedgraph.StackedEngine`
instead, traced once per worker and layer structure, not once per group: each member's
result says ``engine: fused-graph``; otherwise ``fused``, with the graph's reason as its
``engine_fallback``. Members the worker finds it cannot fuse (callbacks, class or sample
weights, a learning-rate schedule: :class:`FusionUnsupported`) come back as
:attr:`GroupRun.unfused`, and the runner trains them one by one, each saying why. The
worker hands this module a :class:`~clonesweep.workers.job.WorkerState`, never itself.

About 320 lines, past the usual 300: what the stacked engine covers, how a group trains
and what each member returns are one engine's protocol, read together when it changes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clonesweep.trials import (
    EngineFallback,
    Timings,
)
from clonesweep.workers.engines.base import arrays_only
from clonesweep.workers.engines.fusedmetrics import member_metrics, stacked_metrics
from clonesweep.workers.engines.stacked import (
    FusionUnsupported,
    build_fused,
    extract_members,
    summed_loss,
)
from clonesweep.workers.job import WorkerState
from clonesweep.workers.member import (
    FusedGroup,
    GroupRun,
    MemberOutput,
    guarded_group,
    member_output,
    predict,
)
from clonesweep.workers.seeding import DATA_ORDER
from clonesweep.workers.streams import StreamData

if TYPE_CHECKING:  # the driver imports this module for fusion_blocker: no Keras at run time
    import keras


__all__ = [
    "FUSABLE_LAYERS",
    "FusionUnsupported",
    "GroupRun",
    "build_fused",
    "extract_members",
    "fusion_blocker",
    "member_metrics",
    "run_group",
    "stacked_metrics",
    "train_fused",
]

FUSABLE_LAYERS = ("InputLayer", "Dense", "Dropout", "Activation", "Flatten")
# Optimizer settings that couple the members: a norm taken over a stacked variable (clipnorm)
# or over all variables (global_clipnorm) mixes every member's gradients.
_COUPLING_OPTIMIZER_KEYS = ("clipnorm", "global_clipnorm")
# Per-member extras a stacked Dense does not reproduce (a constraint's axes, a penalty's sum).
_DENSE_EXTRAS = ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                 "kernel_constraint", "bias_constraint", "quantization_config")


def fusion_blocker(config: Mapping[str, Any], optimizer: Mapping[str, Any],
                   objective_metric: str) -> str | None:
    """Why members of this materialized config cannot be fused, or None when they can.

    Pure Python: the driver calls it before choosing how to run the members.
    """
    if config.get("class_name") != "Sequential":
        return (f"the model is a {config.get('class_name')}; fused training covers "
                "Sequential models only")
    for key in _COUPLING_OPTIMIZER_KEYS:
        if optimizer.get(key) is not None:
            return f"optimizer {key} couples the members' gradients"
    if not objective_metric.startswith("val_"):
        return (f"the objective {objective_metric!r} is a training metric; fused members "
                "are scored on the validation data only")
    for layer in config.get("config", {}).get("layers", []):
        cls, cfg = layer.get("class_name"), layer.get("config", {})
        name = cfg.get("name", "?")
        if cls not in FUSABLE_LAYERS:
            return (f"layer '{name}' is a {cls}, which has no stacked form (covered: "
                    f"{', '.join(FUSABLE_LAYERS)})")
        if cfg.get("trainable") is False:
            return f"layer '{name}' is frozen (trainable: false)"
        if cls == "Dense":
            extra = next((k for k in _DENSE_EXTRAS if cfg.get(k) is not None), None)
            if extra is not None or cfg.get("lora_rank"):
                return f"Dense layer '{name}' has {extra or 'lora_rank'} set"
        if cls == "Dropout" and cfg.get("noise_shape") is not None:
            return f"Dropout layer '{name}' has a noise_shape"
        if cls == "Flatten" and cfg.get("data_format") == "channels_first":
            return f"Flatten layer '{name}' is channels_first"
    return None


def _worker_blocker(state: WorkerState, optimizer: keras.optimizers.Optimizer) -> str | None:
    """What only the worker sees that a stacked model does not reproduce (the driver's
    :func:`fusion_blocker` reads the config alone)."""
    import keras

    tr = state.job.training
    if isinstance(state.data, StreamData):
        return f"the data are {state.data.kind.value} datasets (fusing takes arrays only)"
    if tr.callbacks:
        return "training.callbacks are set (each member needs its own fit)"
    if tr.class_weight is not None:
        return "training.class_weight is set"
    if state.data.weighted:
        return "the data loader returns sample weights"
    if not isinstance(optimizer.learning_rate, keras.Variable):
        return "the learning rate is a schedule or a callable"
    return None


def train_fused(state: WorkerState, group: FusedGroup) -> list[MemberOutput]:
    """Rebuild, fuse, train and pull out the group's members; one output per member.

    With ``training.reuse_graphs`` on, members that :mod:`clonesweep.workers.engines.graphfit`
    covers train on the structure's stacked traced graph
    (:mod:`clonesweep.workers.engines.fusedgraph`, traced once per worker, engine
    ``fused-graph``); others on a stacked Keras model traced for the group (engine ``fused``,
    with the graph's reason as its fallback).

    Raises:
        FusionUnsupported: the members cannot be fused (train them separately).
        RebuildError: a member's config cannot be rebuilt.
    """
    import keras

    from clonesweep.workers.rebuild import rebuild

    keras.utils.clear_session()
    t0 = time.perf_counter()
    job = state.job
    variants = [rebuild(state.base_config, m.params, seed=m.seed) for m in group.members]
    mats = [v.materialized for v in variants]
    members = [v.model for v in variants]
    tr = job.training
    settings = {**tr.optimizer_config, **mats[0].optimizer}
    optimizer = keras.optimizers.get({"class_name": tr.optimizer, "config": settings})
    why = _worker_blocker(state, optimizer)
    if why is not None:
        raise FusionUnsupported(why)
    data = arrays_only(state.data, "fused")
    epochs = int(mats[0].train.get("epochs", tr.epochs))
    batch = int(mats[0].train.get("batch_size", tr.batch_size))
    rngs = [np.random.default_rng(m.seeds[DATA_ORDER]) for m in mats]
    fallback: EngineFallback | None = None
    if tr.reuse_graphs:
        on_graph = _train_on_graph(state, members, optimizer, epochs, batch, rngs, t0)
        if isinstance(on_graph, EngineFallback):
            fallback = on_graph
        else:
            hist, timings, preds = on_graph
            return [member_output(state, spec, mat, model, hist[i], timings,
                                  (data.x_val, data.y_val), _GRAPH_ENGINE, "trained fused",
                                  val_pred=preds[i])
                    for i, (spec, mat, model) in enumerate(zip(group.members, mats, members,
                                                               strict=True))]
    fused = build_fused(members)
    fused.compile(optimizer=optimizer, loss=summed_loss(tr.loss),
                  jit_compile=tr.jit_for("tensorflow"))
    build_s = time.perf_counter() - t0
    x_tr, y_tr = np.asarray(data.x), np.asarray(data.y)
    x_va, y_va = np.asarray(data.x_val), data.y_val
    x_va_k = np.repeat(x_va[:, None], len(members), axis=1)
    histories: list[dict[str, list[float]]] = [{} for _ in members]
    train_s = eval_s = 0.0
    for epoch in range(epochs):
        t1 = time.perf_counter()
        orders = [rng.permutation(len(x_tr)) for rng in rngs]
        fused.fit(np.stack([x_tr[o] for o in orders], axis=1),
                  np.stack([y_tr[o] for o in orders], axis=1), batch_size=batch,
                  epochs=epoch + 1, initial_epoch=epoch, shuffle=False, verbose=0)
        t2 = time.perf_counter()
        pred = predict(fused, x_va_k, tr.validation_batch_size)
        for i, history in enumerate(histories):
            for key, value in member_metrics(tr, y_va, pred[:, i]).items():
                history.setdefault(key, []).append(value)
        train_s, eval_s = train_s + t2 - t1, eval_s + time.perf_counter() - t2
    extract_members(fused, members)
    timings = Timings(build_s, train_s, eval_s)
    return [member_output(state, spec, mat, model, histories[i], timings, (x_va, y_va),
                          _KERAS_ENGINE, "trained fused", fallback)
            for i, (spec, mat, model) in enumerate(zip(group.members, mats, members,
                                                       strict=True))]


_GRAPH_ENGINE, _KERAS_ENGINE = "fused-graph", "fused"
_Trained = tuple[list[dict[str, list[float]]], Timings, np.ndarray]


def _train_on_graph(state: WorkerState, members: Sequence[keras.Model],
                    optimizer: keras.optimizers.Optimizer, epochs: int, batch: int,
                    rngs: Sequence[np.random.Generator],
                    t0: float) -> _Trained | EngineFallback:
    """Train the members on the structure's stacked traced graph; their histories, the
    group's timings and the members' final validation predictions ``(members, n_val, ...)``,
    or why the graph does not cover them."""
    from clonesweep.workers.engines.graphfit import graph_arrays, graph_declines, structure_of

    tr, data = state.job.training, state.data
    declined = graph_declines(members[0], data, tr, _GRAPH_ENGINE, optimizer=optimizer)
    if declined is not None:
        return declined
    data = arrays_only(data, _GRAPH_ENGINE)
    from clonesweep.workers.engines.fusedgraph import StackedEngine

    structure = structure_of(members[0], data, tr.loss, tr.metrics, optimizer=optimizer)
    engine = state.feeds.stacked_engine(structure,
                                        lambda: StackedEngine(structure, members[0]))
    xt, yt, xv, _ = graph_arrays(state.feeds, data)
    engine.load(members)
    rates, hyper = engine.hyper(members[0], optimizer)
    build_s = time.perf_counter() - t0
    n, y_va = len(data.x), data.y_val
    histories: list[dict[str, list[float]]] = [{} for _ in members]
    train_s = eval_s = 0.0
    pred = np.zeros(0)
    for _ in range(epochs):
        t1 = time.perf_counter()
        # Training and the validation predictions in one call: train_s holds both.
        _, pred = engine.train_epoch(xt, yt, np.stack([rng.permutation(n) for rng in rngs]),
                                     batch, rates, hyper, xv, tr.validation_batch_size)
        t2 = time.perf_counter()
        for history, metrics in zip(histories, stacked_metrics(tr, y_va, pred), strict=True):
            for key_, value in metrics.items():
                history.setdefault(key_, []).append(value)
        train_s, eval_s = train_s + t2 - t1, eval_s + time.perf_counter() - t2
    engine.store(members)
    return histories, Timings(build_s, train_s, eval_s), pred


def run_group(state: WorkerState, group: FusedGroup) -> GroupRun:
    """Train a fused group on this worker; never raises. An error of the fused engine fails
    no member: it comes back as :attr:`GroupRun.unfused` (see :func:`guarded_group`)."""
    return guarded_group(group, state.node, state.worker, _KERAS_ENGINE,
                         lambda: train_fused(state, group), "",
                         not_covered=FusionUnsupported)
