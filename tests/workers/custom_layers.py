"""A registered custom layer for the rebuild tests (and a ``model.imports`` example)."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="cstest")
class ScaledDense(keras.layers.Layer):
    """A dense layer whose output is multiplied by ``scale``; seeded through its initializer."""

    def __init__(self, units: int, scale: float = 1.0, kernel_initializer: Any = "glorot_uniform",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.scale = scale
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units),
                                      initializer=self.kernel_initializer, name="kernel")

    def call(self, inputs: Any) -> Any:
        return keras.ops.matmul(inputs, self.kernel) * self.scale

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "scale": self.scale,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
