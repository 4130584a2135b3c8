"""The stacked state of a fused JAX group: members built, stacked, and written back.

Split from :mod:`clonesweep.workers.engines.jaxfused` (the training loop): here the Keras
side, i.e. how members and their optimizers are built so that each one's state is exactly
what it has when compiled and trained alone, and how metrics are updated and read without
touching any Keras variable (``keras.StatelessScope``).

Imports Keras and JAX: JAX backend only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import keras
import numpy as np

from clonesweep.errors import SpecError
from clonesweep.workers.rebuild import rebuild
from clonesweep.workers.seeding import DATA_ORDER
from clonesweep.workers.training import metrics_for

#: The param that sets a member's rate on every plain Dropout layer (materialize syntax).
DROPOUT = "layers[Dropout].rate"

__all__ = ["DROPOUT", "RateDropout", "Stacked", "build_members", "member_optimizer",
           "metric_logs", "unstack_into", "update_metrics"]


@dataclass
class Stacked:
    """Every member's variables stacked on a leading member axis, and the models they came
    from. ``template`` is a compiled model of the same structure whose variables are never
    read: its methods trace the step. Mutable, and private to one training call."""

    template: Any
    models: list[Any]
    optimizers: list[Any]
    data_seeds: list[int]
    trainable: list[Any]
    non_trainable: list[Any]
    optimizer: list[Any]
    metrics_zero: list[Any]

    def train_state(self) -> tuple[Any, ...]:
        """The state a training epoch starts from (metrics reset, as ``fit`` does)."""
        return self.trainable, self.non_trainable, self.optimizer, self.metrics_zero

    def eval_state(self) -> tuple[Any, ...]:
        """The state a validation pass starts from (metrics reset, as ``evaluate`` does)."""
        return self.trainable, self.non_trainable, self.metrics_zero

    def keep(self, state: tuple[Any, ...]) -> None:
        """Take the model and optimizer variables of a trained epoch's state."""
        self.trainable, self.non_trainable, self.optimizer = (list(s) for s in state[:3])


def member_optimizer(plan: Any, member: Any) -> Any:
    """The optimizer ``member`` is compiled with when trained alone."""
    config = dict(plan.optimizer_config)
    if member.learning_rate is not None:
        config["learning_rate"] = member.learning_rate
    if member.weight_decay is not None:
        config["weight_decay"] = member.weight_decay
    return keras.optimizers.get({"class_name": plan.optimizer, "config": config})


def build_members(base_config: dict[str, Any], params: Mapping[str, Any],
                  members: Sequence[Any], plan: Any, sample: tuple[Any, Any]) -> Stacked:
    """Rebuild and compile each member alone, then stack their variables.

    ``sample`` (one training sample) builds the template's compiled loss and metrics before
    any tracing, so that no Keras variable is created inside a traced function.

    Raises:
        SpecError: members differ in learning rate while the optimizer has a schedule.
    """
    models, optimizers, seeds = [], [], []
    for member in members:
        own = {**params, **(getattr(member, "params", None) or {})}
        if member.dropout is not None:
            own[DROPOUT] = member.dropout
        variant = rebuild(base_config, own, seed=member.seed)
        optimizer = member_optimizer(plan, member)
        variant.model.compile(optimizer=optimizer, loss=plan.loss,
                              metrics=metrics_for(variant.model, plan.metrics))
        optimizer.build(variant.model.trainable_variables)
        models.append(variant.model)
        optimizers.append(optimizer)
        seeds.append(variant.materialized.seeds[DATA_ORDER])
    template = _template(base_config, params, members[0], plan, sample,
                         rated=any(m.dropout is not None or getattr(m, "params", None)
                                   for m in members))
    # The template's last optimizer variable is the weight decay: each member's own value.
    per_member = [[*(v.value for v in o.variables),
                   keras.ops.convert_to_tensor(o.weight_decay or 0.0, "float32")]
                  for o in optimizers]
    if any(len(v) != len(template.optimizer.variables) for v in per_member):
        raise SpecError("the members' optimizers have different variables: a learning-rate "
                        "schedule cannot differ per member", value=dict(plan.optimizer_config),
                        field="optimizer", hint="give every member the same schedule, or a "
                        "float learning rate")
    return Stacked(
        template=template, models=models, optimizers=optimizers, data_seeds=seeds,
        trainable=_stack([[v.value for v in m.trainable_variables] for m in models]),
        non_trainable=_stack([_non_trainable(template, m) for m in models]),
        optimizer=_stack(per_member),
        metrics_zero=_stack([[v.value for v in template.metrics_variables]] * len(models)))


def _template(base_config: dict[str, Any], params: Mapping[str, Any], member: Any,
              plan: Any, sample: tuple[Any, Any], rated: bool) -> Any:
    """A compiled model whose methods trace the fused step, its optimizer's
    ``weight_decay`` an optimizer variable so that it stacks. A member trained alone
    without weight decay gets 0: ``v - v * 0 * lr`` is ``v`` bitwise."""
    template = rebuild(base_config, params, seed=member.seed).model
    if rated:
        template = keras.models.clone_model(template, clone_function=_rated)
    optimizer = member_optimizer(plan, member)
    template.compile(optimizer=optimizer, loss=plan.loss,
                     metrics=metrics_for(template, plan.metrics))
    optimizer.build(template.trainable_variables)
    if optimizer.weight_decay is None:
        optimizer.weight_decay = 0.0
    # Keras reads ``weight_decay`` through ``ops.cast`` inside ``stateless_apply``: a
    # variable there reads the member's stacked value, and casts to the same float32.
    decay = optimizer.add_variable(shape=(), name="weight_decay")
    decay.assign(float(optimizer.weight_decay))
    optimizer.weight_decay = decay
    x, y = sample
    y_pred = template(x, training=False)
    template.compute_loss(x, y, y_pred)
    template.compute_metrics(x, y, y_pred, None)
    template.reset_metrics()
    return template


def update_metrics(model: Any, values: list[Any], loss: Any, x: Any, y: Any,
                   y_pred: Any) -> list[Any]:
    """``model``'s metric variables after one batch, as ``fit`` and ``evaluate`` update
    them: the loss tracker weighted by the batch size, then the compiled metrics."""
    mapping = list(zip(model.metrics_variables, values, strict=True))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        model.metrics[0].update_state(loss, sample_weight=jax.tree_util.tree_leaves(x)[0]
                                      .shape[0])
        model.compute_metrics(x, y, y_pred, None)
    updated = []
    for variable, old in zip(model.metrics_variables, values, strict=True):
        new = scope.get_current_value(variable)
        updated.append(old if new is None else new)
    return updated


def metric_logs(model: Any, stacked: list[Any]) -> list[dict[str, float]]:
    """Each member's metric results from stacked metric variables."""
    arrays = [np.asarray(v) for v in stacked]
    logs = []
    for k in range(arrays[0].shape[0] if arrays else 0):
        mapping = list(zip(model.metrics_variables, [a[k] for a in arrays], strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            logs.append({name: float(v) for name, v in model.get_metrics_result().items()})
    return logs


def unstack_into(stacked: Stacked) -> list[Any]:
    """Write each member's trained variables back into its own model and optimizer."""
    for k, (model, optimizer) in enumerate(zip(stacked.models, stacked.optimizers,
                                               strict=True)):
        # The stacked optimizer state ends with the template's weight-decay variable,
        # which the member's own optimizer keeps as a float.
        own = [v for v, t in zip(_aligned(stacked.template, model), stacked.non_trainable,
                                 strict=True) if v is not None]
        kept = [t for v, t in zip(_aligned(stacked.template, model), stacked.non_trainable,
                                  strict=True) if v is not None]
        pairs = [*zip(model.trainable_variables, stacked.trainable, strict=True),
                 *zip(own, kept, strict=True),
                 *zip(optimizer.variables, stacked.optimizer[:-1], strict=True)]
        for variable, values in pairs:
            variable.assign(values[k])
    return stacked.models


def _rated(layer: Any) -> Any:
    """A plain Dropout becomes a :class:`RateDropout` of the same name, rate and seed."""
    if type(layer) is not keras.layers.Dropout or layer.noise_shape is not None:
        return layer.__class__.from_config(layer.get_config())
    return RateDropout(layer.rate, seed=layer.seed, name=layer.name)


def _aligned(template: Any, model: Any) -> list[Any]:
    """``model``'s non-trainable variables in the template's order; None where the template
    holds a :class:`RateDropout`'s ``keep`` (the member's plain Dropout has a float rate)."""
    keeps = {id(layer.keep) for layer in template.layers if isinstance(layer, RateDropout)}
    own = iter(model.non_trainable_variables)
    return [None if id(v) in keeps else next(own) for v in template.non_trainable_variables]


def _non_trainable(template: Any, model: Any) -> list[Any]:
    """The member's values for the template's non-trainable variables: a RateDropout's
    keep probability is ``1 - rate`` of the member's layer of that name, rounded once to
    float32 as Keras's dropout rounds its Python ``1.0 - rate``."""
    keeps = {id(layer.keep): layer.name for layer in template.layers
             if isinstance(layer, RateDropout)}
    values = []
    for v, own in zip(template.non_trainable_variables, _aligned(template, model),
                      strict=True):
        if own is not None:
            values.append(own.value)
        else:
            rate = model.get_layer(keeps[id(v)]).rate
            values.append(keras.ops.convert_to_tensor(1.0 - rate, "float32"))
    return values


@keras.saving.register_keras_serializable(package="clonesweep")
class RateDropout(keras.layers.Layer):
    """Dropout whose keep probability is a non-trainable weight, so that members stacked
    on one template can each have their own rate. Its arithmetic is Keras's JAX dropout's
    (a Bernoulli mask from the layer's seed generator, ``inputs / keep``). A member of rate
    0 draws a mask of ones where Keras's Dropout draws nothing: the same outputs, but its
    seed state moves. Lives only inside the fused step's template: members keep Dropout."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate, self.seed = rate, seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.keep = self.add_weight(shape=(), initializer=keras.initializers.Constant(
            1.0 - rate), trainable=False, name="keep")

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training:
            return inputs
        keep = self.keep.value
        mask = jax.random.bernoulli(self.seed_generator.next(), p=keep, shape=inputs.shape)
        # XLA compiles Keras's ``inputs / keep_prob`` (a constant) as a product with the
        # float32 reciprocal: the same product here keeps members bitwise.
        scale = jax.numpy.float32(1.0) / keep
        return jax.lax.select(mask, inputs * scale, jax.numpy.zeros_like(inputs))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def _stack(per_member: list[list[Any]]) -> list[Any]:
    return [jax.numpy.stack(column) for column in zip(*per_member, strict=True)]
