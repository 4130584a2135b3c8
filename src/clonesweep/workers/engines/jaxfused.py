"""Fused members of any Keras model on the JAX backend: one vmapped step per batch.

K members of ONE model config are each rebuilt with their own member seed
(:func:`~clonesweep.workers.rebuild.rebuild`, so initial weights and Dropout seeds are those
the member has when trained alone). Their ``trainable_variables``, ``non_trainable_variables``
(BatchNorm statistics, Dropout seed-generator states) and optimizer variables are stacked
along a new leading axis, and one training step (Keras's own
``model.compute_loss_and_updates``: ``stateless_call(training=True)`` and the compiled loss,
under ``jax.value_and_grad``, then ``optimizer.stateless_apply``) is ``jax.vmap``-ed over it:
any layer kind works, through public API only. Each member visits the data in its own order,
the one :func:`~clonesweep.workers.engines.kerasfit.epoch_orders` gives the Keras-fit engine
for the member's data-order seed; samples are gathered inside the compiled step.

One jitted call per batch, not a ``lax.scan`` over the epoch: convolutions inside a scan ran
4-9x slower on CPU (FACTS.md). The ragged last batch (and the ragged last validation batch)
runs member by member through the unbatched step, compiled once for the group: that step is
bitwise ``fit``'s for every layer kind tried, convolutions included. Full batches run as
:class:`Mode` says: vmapped (fast; bitwise for the Transformer tested, 2e-7 off for the
MLP, a tolerance for convolutions, whose gradients XLA computes another way when batched
or inside a loop), in a ``lax.map`` (bitwise for MLPs), or member by member (bitwise).

Packed trials: members may differ in learning rate (the optimizer's ``learning_rate``
variable, stacked like any optimizer variable) and weight decay (the optimizer's
``weight_decay`` becomes an optimizer variable, so it stacks too; the arithmetic is the
same as with a float), and in the rate of plain ``Dropout`` layers: the template's Dropout
layers become :class:`~clonesweep.workers.engines.jaxstate.RateDropout`, whose keep
probability is a non-trainable weight (Keras's Dropout tests ``rate > 0`` in Python, so its
rate cannot be a variable). The dropout inside other layers (MultiHeadAttention takes
another code path at rate 0) cannot differ per member.

Must run in a process whose ``KERAS_BACKEND`` is ``jax`` (Keras fixes its backend per
process). Imports Keras and JAX.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Any

import jax
import keras
import numpy as np

from clonesweep.errors import SpecError
from clonesweep.workers.arrays import length, window
from clonesweep.workers.engines.jaxstate import (
    Stacked,
    build_members,
    metric_logs,
    unstack_into,
    update_metrics,
)
from clonesweep.workers.engines.kerasfit import epoch_orders

__all__ = ["FusedMember", "FusedPlan", "FusedResult", "Mode", "train_fused_jax"]


class Mode(str, Enum):
    """How a fused step runs its members; all keep one compiled program for the group.

    ``VMAP``: one ``jax.vmap``-ed call per batch, the fast one. ``MAP``: one call per batch,
    the members one after another inside it (``jax.lax.map``). ``SERIAL``: one call per
    member and batch of the unbatched step, compiled once for all members: bitwise
    ``fit``'s arithmetic for every layer kind, convolutions included (tests/unit/workers/
    engines/test_jaxfused.py states what each mode matches).
    """

    VMAP = "vmap"
    MAP = "map"
    SERIAL = "serial"


@dataclass(frozen=True)
class FusedMember:
    """One member of a fused group (or one packed trial).

    Attributes:
        seed: The member's root seed (initial weights, Dropout streams, data order).
        learning_rate: Overrides the optimizer's learning rate for this member.
        weight_decay: Overrides the optimizer's weight decay for this member.
        dropout: Overrides the rate of every plain ``Dropout`` layer for this member
            (not the dropout inside MultiHeadAttention or other layers).
        params: This member's own params over the group's (a packed trial's rates of
            single plain ``Dropout`` layers, ``layers.<name>.rate``); they must not change
            any shape or the layer graph.
    """

    seed: int
    learning_rate: float | None = None
    weight_decay: float | None = None
    dropout: float | None = None
    params: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class FusedPlan:
    """How every member trains: what ``compile`` and ``fit`` get in the Keras-fit engine.

    Attributes:
        epochs: Number of epochs.
        batch_size: Training batch size.
        validation_batch_size: Batch size of each epoch's validation pass.
        loss: The compiled loss (a Keras loss name).
        metrics: Compiled metrics (Keras names).
        optimizer: A registered Keras optimizer name.
        optimizer_config: The optimizer's constructor arguments shared by all members.
        mode: How the members' steps run (:class:`Mode`).
    """

    epochs: int
    batch_size: int
    validation_batch_size: int
    loss: str
    metrics: tuple[str, ...] = ()
    optimizer: str = "adam"
    optimizer_config: Mapping[str, Any] = field(default_factory=dict)
    mode: Mode = Mode.VMAP


@dataclass(frozen=True)
class FusedResult:
    """The trained members, in the order given.

    Attributes:
        models: Each member's compiled Keras model holding its trained weights and
            optimizer state (savable as ``.keras``).
        histories: Each member's logs per epoch (``loss``, metrics, ``val_*``), as ``fit``
            would return them in ``History.history``.
        train_s: Seconds spent in training steps (compilation included).
        eval_s: Seconds spent in validation passes.
    """

    models: list[Any]
    histories: list[dict[str, list[float]]]
    train_s: float
    eval_s: float


def train_fused_jax(base_config: dict[str, Any], members: Sequence[FusedMember],
                    data: tuple[Any, Any, Any, Any], plan: FusedPlan,
                    params: Mapping[str, Any] | None = None,
                    on_epoch: Callable[[int, list[dict[str, float]]], bool] | None = None,
                    ) -> FusedResult:
    """Train ``members`` of ``base_config`` (with ``params`` applied) as one program.

    ``on_epoch(epoch, logs)``, if given, is called after each epoch's validation with each
    member's logs of that epoch; True stops the group there (packed trials: every trial
    pruned or failed).

    Each member ends equal, within the tolerance its :class:`Mode` states (bitwise for
    ``SERIAL``), to the same member compiled with ``plan``'s optimizer (its own learning
    rate and weight decay) and trained alone with the Keras-fit engine on JAX.

    Raises:
        SpecError: not on the JAX backend, no members, or a per-member learning rate with
            a learning-rate schedule.
    """
    if keras.backend.backend() != "jax":
        raise SpecError("the fused JAX engine needs Keras's JAX backend",
                        field="KERAS_BACKEND", value=keras.backend.backend(),
                        hint="run it in a process started with KERAS_BACKEND=jax")
    if not members:
        raise SpecError("a fused group needs at least one member", value=list(members))
    x_tr, y_tr, x_va, y_va = data
    sample = window(x_tr, 0, 1), window(y_tr, 0, 1)
    stacked = build_members(base_config, params or {}, members, plan, sample)
    step = _Steps(stacked.template, Mode(plan.mode))
    n, batch = length(x_tr), plan.batch_size
    full, ragged = divmod(n, batch)
    orders = [epoch_orders(seed, n, 0, plan.epochs) for seed in stacked.data_seeds]
    xs, ys = jax.tree_util.tree_map(jax.numpy.asarray, (x_tr, y_tr))
    histories: list[dict[str, list[float]]] = [{} for _ in members]
    train_s = eval_s = 0.0
    for epoch in range(plan.epochs):
        t0 = time.perf_counter()
        order = np.stack([next(o) for o in orders])  # (K, n)
        state = stacked.train_state()
        for s in range(full):
            state = step.train_all(state, xs, ys, order[:, s * batch:(s + 1) * batch])
        if ragged:
            state = step.one_by_one(step.train_one, state, xs, ys, order[:, full * batch:])
        stacked.keep(state)
        train_logs = metric_logs(stacked.template, state[3])
        t1 = time.perf_counter()
        val_logs = _validate(step, stacked, x_va, y_va, plan.validation_batch_size)
        eval_s += time.perf_counter() - t1
        train_s += t1 - t0
        for k, history in enumerate(histories):
            for key, value in {**train_logs[k], **val_logs[k]}.items():
                history.setdefault(key, []).append(value)
        if on_epoch is not None and on_epoch(
                epoch, [{**t, **v} for t, v in zip(train_logs, val_logs, strict=True)]):
            break
    models = unstack_into(stacked)
    return FusedResult(models=models, histories=histories, train_s=train_s, eval_s=eval_s)


def _validate(step: _Steps, stacked: Stacked, x: Any, y: Any,
              batch: int) -> list[dict[str, float]]:
    """Every member's validation logs: consecutive batches, as ``evaluate`` slices them."""
    n = length(x)
    state = stacked.eval_state()
    for start in range(0, n, batch):
        xb, yb = window(x, start, start + batch), window(y, start, start + batch)
        if start + batch <= n:
            state = step.eval_all(state, xb, yb)
        else:
            state = step.one_by_one(step.eval_one, state, xb, yb, per_member=False)
    # ``evaluate`` writes the non-trainable state back, and so does this: a recurrent layer
    # with its own ``dropout`` draws its masks at inference too, advancing its seed
    # generator, and the next epoch's masks follow from there (BatchNorm and Dropout leave
    # it as it was).
    stacked.non_trainable = list(state[1])
    return [{f"val_{k}": v for k, v in logs.items()}
            for logs in metric_logs(stacked.template, state[2])]


class _Steps:
    """The compiled steps of one template model: ``train_all``/``eval_all`` for full
    batches (per :class:`Mode`), ``train_one``/``eval_one`` (unbatched) for ragged ones.
    Each is traced once per input shape."""

    def __init__(self, model: Any, mode: Mode) -> None:
        self._model = model

        def train(state: tuple[Any, ...], x: Any, y: Any) -> tuple[Any, ...]:
            tv, ntv, ov, mv = state
            grad_fn = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)
            (_, (loss, y_pred, ntv, mv)), grads = grad_fn(
                tv, ntv, mv, x, y, None, training=True, optimizer_variables=ov)
            tv, ov = model.optimizer.stateless_apply(ov, grads, tv)
            return tv, ntv, ov, update_metrics(model, mv, loss, x, y, y_pred)

        def evaluate(state: tuple[Any, ...], x: Any, y: Any) -> tuple[Any, ...]:
            tv, ntv, mv = state
            _, (loss, y_pred, ntv, mv) = model.compute_loss_and_updates(
                tv, ntv, mv, x, y, None, training=False)
            return tv, ntv, update_metrics(model, mv, loss, x, y, y_pred)

        def gathered(state: tuple[Any, ...], xs: Any, ys: Any, idx: Any) -> tuple[Any, ...]:
            take = jax.tree_util.tree_map(lambda a: a[idx], (xs, ys))
            return train(state, *take)

        self.train_one: Any = jax.jit(gathered)
        self.eval_one: Any = jax.jit(evaluate)
        self.train_all: Any
        self.eval_all: Any
        if mode is Mode.VMAP:
            self.train_all = jax.jit(jax.vmap(gathered, in_axes=(0, None, None, 0)))
            self.eval_all = jax.jit(jax.vmap(evaluate, in_axes=(0, None, None)))
            return
        if mode is Mode.MAP:
            def train_all(state: tuple[Any, ...], xs: Any, ys: Any, idx: Any) -> Any:
                return jax.lax.map(lambda a: gathered(a[0], xs, ys, a[1]), (state, idx))

            self.train_all = jax.jit(train_all)
        else:
            self.train_all = partial(self.one_by_one, self.train_one)
        # Validation inside ``lax.map`` summed the loss in another order (2e-7 off an
        # MLP's val_loss): members run one by one through the unbatched test step.
        self.eval_all = partial(self.one_by_one, self.eval_one, per_member=False)

    @staticmethod
    def one_by_one(fn: Any, state: tuple[Any, ...], *args: Any,
                   per_member: bool = True) -> tuple[Any, ...]:
        """Run ``fn`` on each member's slice of the stacked ``state`` and restack. With
        ``per_member``, ``args[-1]`` holds one row per member (its sample indices).

        The slices and the restacking are one compiled call each (copies: bitwise the
        eager ones); taken leaf by leaf they were one eager dispatch per variable and member
        (3,648 for 16 CNN members over 5 epochs: a warm group took 3.2-4.0 s, now 3.0-3.1 s,
        in one process on an idle 2-core machine)."""
        outs = []
        for m, member in enumerate(_split(state)):
            own = (*args[:-1], args[-1][m]) if per_member else args
            outs.append(fn(member, *own))
        return _stack(outs)


@jax.jit
def _split(state: Any) -> tuple[Any, ...]:
    """Each member's slice of a stacked state (the leading axis), in one call."""
    k = jax.tree_util.tree_leaves(state)[0].shape[0]
    return tuple(jax.tree_util.tree_map(lambda a, m=m: a[m], state) for m in range(k))


@jax.jit
def _stack(outs: Any) -> Any:
    """The members' states stacked again along a new leading axis, in one call."""
    return jax.tree_util.tree_map(lambda *a: jax.numpy.stack(a), *outs)
