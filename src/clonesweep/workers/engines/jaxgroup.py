"""A fused ensemble group on a JAX worker: the members of any model trained as one program.

The worker-side entry of ``clonesweep ensemble --fused`` when the worker runs Keras on JAX
(the driver starts the ensemble's workers with ``KERAS_BACKEND=jax`` for models the
TensorFlow stacked engine does not cover; see
:mod:`clonesweep.orchestrator.ensemble.run`). :func:`run_group` turns a
:class:`~clonesweep.workers.member.FusedGroup` into a
:func:`~clonesweep.workers.engines.jaxfused.train_fused_jax` call and its result into one
:class:`~clonesweep.workers.member.MemberOutput` per member, with the same fields as a
member trained alone. It never fails a member for the engine's sake: what the engine does
not take (callbacks, class or sample weights, datasets, a worker not on JAX) and any
error of its own come back as :attr:`GroupRun.unfused`, and the runner trains those members
one by one on Keras's fit, each saying why (:class:`~clonesweep.trials.EngineFallback`).

How each full batch runs (:class:`~clonesweep.workers.engines.jaxfused.Mode`) is chosen
from the layer kinds, as measured in tests/unit/workers/engines/test_jaxfused.py: a model with a
convolution runs vmapped (no compiled program reproduces a convolution's gradients but the
unbatched one, which is K times slower: a tolerance is stated in docs/ensembles.md); a
model with attention runs vmapped (bitwise the member trained alone); any other model
(MLPs) runs its members one after another inside each compiled step (``lax.map``: bitwise,
where vmap sums the matmul in another order, 2.4e-7 off).

Imports Keras (and, through the engine, JAX) only inside :func:`run_group`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from clonesweep.trials import (
    EngineFallback,
    FallbackReason,
    Timings,
)
from clonesweep.workers.engines.base import arrays_only
from clonesweep.workers.job import WorkerState
from clonesweep.workers.member import (
    FusedGroup,
    GroupRun,
    MemberOutput,
    guarded_group,
    member_output,
)
from clonesweep.workers.streams import StreamData

__all__ = ["ENGINE", "group_declines", "mode_for", "run_group"]

#: The engine name recorded on each member it trains.
ENGINE = "fused-jax"


def mode_for(config: Mapping[str, Any]) -> str:
    """The :class:`~clonesweep.workers.engines.jaxfused.Mode` value for a model config:
    ``vmap`` with a convolution or attention layer anywhere in it, else ``map``.

    >>> mode_for({"class_name": "Sequential", "config": {"layers": [
    ...     {"class_name": "Conv2D", "config": {}}]}})
    'vmap'
    >>> mode_for({"class_name": "Sequential", "config": {"layers": [
    ...     {"class_name": "Dense", "config": {}}]}})
    'map'
    """
    kinds = set(_class_names(config))
    if any(k.startswith(("Conv", "DepthwiseConv", "SeparableConv")) for k in kinds) or \
            any("Attention" in k for k in kinds):
        return "vmap"
    return "map"


def group_declines(state: WorkerState, backend: str) -> EngineFallback | None:
    """Why this worker's fused JAX engine does not take the group, or None. Never raises."""
    tr = state.job.training
    why = None
    if backend != "jax":
        return EngineFallback(ENGINE, FallbackReason.BACKEND,
                              f"this worker runs Keras on {backend}; fused members of any "
                              "model need KERAS_BACKEND=jax (the Ray backend starts the "
                              "ensemble's workers so; the in-process backend runs in the "
                              "caller's process)")
    if tr.callbacks:
        why = "training.callbacks are set (each member needs its own fit)"
    elif tr.class_weight is not None:
        why = "training.class_weight is set"
    elif isinstance(state.data, StreamData):
        why = f"the data are {state.data.kind.value} datasets (the engine takes arrays)"
    elif state.data.weighted:
        why = "the data loader returns sample weights"
    elif tr.steps_per_execution != 1:
        why = "training.steps_per_execution is not 1"
    return None if why is None else EngineFallback(ENGINE, FallbackReason.NOT_COVERED, why)


def run_group(state: WorkerState, group: FusedGroup) -> GroupRun:
    """Train ``group`` fused on this (JAX) worker; never raises. An error of the engine fails
    no member: it comes back as :attr:`GroupRun.unfused` (trained one by one instead)."""
    import keras

    declined = group_declines(state, keras.backend.backend())
    if declined is not None:
        return GroupRun(None, {}, declined)
    return guarded_group(group, state.node, state.worker, ENGINE,
                         lambda: _train(state, group),
                         f" on JAX ({mode_for(state.base_config)} mode)", engine=ENGINE)


def _train(state: WorkerState, group: FusedGroup) -> list[MemberOutput]:
    import keras

    from clonesweep.workers.engines.jaxfused import (
        FusedMember,
        FusedPlan,
        Mode,
        train_fused_jax,
    )
    from clonesweep.workers.materialize import materialize

    keras.utils.clear_session()
    t0 = time.perf_counter()
    data, tr = arrays_only(state.data, ENGINE), state.job.training
    params = dict(group.members[0].params)
    mats = [materialize(state.base_config, m.params, m.seed) for m in group.members]
    plan = FusedPlan(
        epochs=int(mats[0].train.get("epochs", tr.epochs)),
        batch_size=int(mats[0].train.get("batch_size", tr.batch_size)),
        validation_batch_size=tr.validation_batch_size, loss=tr.loss,
        metrics=tuple(tr.metrics), optimizer=tr.optimizer,
        optimizer_config={**tr.optimizer_config, **mats[0].optimizer},
        mode=Mode(mode_for(mats[0].config)))
    arrays = (data.x, data.y, data.x_val, data.y_val)
    fused = train_fused_jax(state.base_config, [FusedMember(m.seed) for m in group.members],
                            arrays, plan, params=params)
    build_s = max(0.0, time.perf_counter() - t0 - fused.train_s - fused.eval_s)
    timings = Timings(build_s, fused.train_s, fused.eval_s)
    val = (data.x_val, data.y_val)
    return [member_output(state, spec, mat, model, history, timings, val, ENGINE,
                          "trained fused on JAX")
            for spec, mat, model, history in zip(group.members, mats, fused.models,
                                                 fused.histories, strict=True)]


def _class_names(config: Any) -> list[str]:
    """Every ``class_name`` in a (nested) config."""
    found: list[str] = []
    if isinstance(config, Mapping):
        if isinstance(config.get("class_name"), str):
            found.append(config["class_name"])
        for value in config.values():
            found.extend(_class_names(value))
    elif isinstance(config, list):
        for value in config:
            found.extend(_class_names(value))
    return found
