"""The stacked Keras model of fused members: K members' weights stacked along a member axis
(a Dense kernel ``(K, in, out)``, one ``einsum``), initial weights copied bitwise from the
separately built members and copied back after training. See
:mod:`clonesweep.workers.engines.fused` for why the result is each member's own training.

Imports Keras only inside its functions (the driver imports :mod:`~.fused`, which imports
this module).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

__all__ = ["FusionUnsupported", "build_fused", "extract_members", "summed_loss"]


class FusionUnsupported(Exception):
    """These members cannot be trained as one stacked model; train them separately."""


# -- the stacked layers (built by build_fused only, never serialized) ---------------------------
def _layers() -> dict[str, Any]:
    import keras

    class StackedDense(keras.layers.Layer):
        def __init__(self, members: int, units: int, activation: Any, use_bias: bool,
                     **kw: Any) -> None:
            super().__init__(**kw)
            self.members, self.units, self.use_bias = members, units, use_bias
            self.activation = keras.activations.get(activation)

        def build(self, input_shape: Any) -> None:
            k, fan_in = self.members, int(input_shape[-1])
            self.kernel = self.add_weight(shape=(k, fan_in, self.units), initializer="zeros",
                                          name="kernel")
            self.bias = (self.add_weight(shape=(k, self.units), initializer="zeros",
                                         name="bias") if self.use_bias else None)

        def call(self, x: Any) -> Any:
            y = keras.ops.einsum("bki,kio->bko", x, self.kernel)
            if self.bias is not None:
                y = y + self.bias
            return self.activation(y)

    class StackedDropout(keras.layers.Layer):
        def __init__(self, rate: float, seeds: Sequence[int], **kw: Any) -> None:
            super().__init__(**kw)
            self.rate = rate
            # One generator per member, seeded as that member's own Dropout layer seeds its.
            self.generators = [keras.random.SeedGenerator(s) for s in seeds]

        def call(self, x: Any, training: bool = False) -> Any:
            if not training or self.rate <= 0:
                return x
            return keras.ops.stack(
                [keras.random.dropout(x[:, k], self.rate, seed=g)
                 for k, g in enumerate(self.generators)], axis=1)

    class StackedActivation(keras.layers.Layer):
        def __init__(self, activation: Any, **kw: Any) -> None:
            super().__init__(**kw)
            self.activation = keras.activations.get(activation)

        def call(self, x: Any) -> Any:
            return self.activation(x)

    class StackedFlatten(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return keras.ops.reshape(x, (-1, x.shape[1], int(np.prod(x.shape[2:]))))

    return {"Dense": StackedDense, "Dropout": StackedDropout,
            "Activation": StackedActivation, "Flatten": StackedFlatten}


def build_fused(members: Sequence[keras.Model]) -> keras.Model:
    """One model of ``len(members)`` stacked members, initial weights copied bitwise.

    Raises:
        FusionUnsupported: not all Sequential, a layer without a stacked form, a Dense on an
            input of rank above 2.
    """
    import keras

    k = len(members)
    first = members[0]
    if not all(isinstance(m, keras.Sequential) for m in members):
        raise FusionUnsupported("fused training covers Sequential models only")
    stacked = _layers()
    inp = keras.Input(shape=(k, *first.input_shape[1:]), name="members_input")
    x = inp
    for layer in first.layers:
        cls = type(layer).__name__
        if cls not in stacked:
            raise FusionUnsupported(f"layer '{layer.name}' ({cls}) has no stacked form")
        if cls == "Dense":
            if len(x.shape) != 3:
                raise FusionUnsupported(f"Dense layer '{layer.name}' sees an input of rank "
                                        f"{len(x.shape) - 1}; only rank 2 is covered")
            fused = stacked[cls](k, layer.units, layer.activation, layer.use_bias,
                                 name=layer.name)
        elif cls == "Dropout":
            seeds = [int(m.get_layer(layer.name).seed) for m in members]
            fused = stacked[cls](layer.rate, seeds, name=layer.name)
        elif cls == "Activation":
            fused = stacked[cls](layer.activation, name=layer.name)
        else:
            fused = stacked[cls](name=layer.name)
        x = fused(x)
    model = keras.Model(inp, x, name="fused_members")
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            layer.kernel.assign(np.stack([m.get_layer(layer.name).kernel.numpy()
                                          for m in members]))
            if layer.bias is not None:
                layer.bias.assign(np.stack([m.get_layer(layer.name).bias.numpy()
                                            for m in members]))
    return model


def extract_members(fused: keras.Model,
                    members: Sequence[keras.Model]) -> list[keras.Model]:
    """Copy each member's slice of the fused weights into its own model; returns them."""
    for layer in fused.layers:
        if not hasattr(layer, "kernel"):
            continue
        kernel = layer.kernel.numpy()
        bias = layer.bias.numpy() if layer.bias is not None else None
        for i, member in enumerate(members):
            target = member.get_layer(layer.name)
            target.kernel.assign(kernel[i])
            if bias is not None:
                target.bias.assign(bias[i])
    return list(members)


def summed_loss(name: str) -> Any:
    import keras

    base = keras.losses.get(name)

    def summed(y_true: Any, y_pred: Any) -> Any:
        # Per sample: the sum over members; Keras then takes the batch mean, so the loss is
        # the sum of the members' mean losses and member k's gradient is its own.
        return keras.ops.sum(base(y_true, y_pred), axis=-1)

    return summed
