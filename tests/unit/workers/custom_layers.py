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


@keras.saving.register_keras_serializable(package="cstest")
class TinyClassifier(keras.Model):
    """A subclassed model whose config is its constructor arguments and whose weights are
    created in its constructor; two Dense blocks share one initializer instance's config."""

    def __init__(self, input_dim: int = 6, hidden: int = 8, blocks: int = 2, classes: int = 3,
                 dropout: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_dim, self.hidden, self.blocks = input_dim, hidden, blocks
        self.classes, self.dropout = classes, dropout
        init = keras.initializers.GlorotUniform()  # unseeded: Keras draws its seed
        self.dense_blocks = [keras.layers.Dense(hidden, activation="relu", name=f"block{i}",
                                                kernel_initializer=init.__class__.from_config(
                                                    init.get_config()))
                             for i in range(blocks)]
        self.drop = keras.layers.Dropout(dropout, name="drop")
        self.head = keras.layers.Dense(classes, name="head")
        self(keras.ops.zeros((1, input_dim)))  # creates every weight now

    def call(self, inputs: Any, training: bool = False) -> Any:
        x = inputs
        for block in self.dense_blocks:
            x = block(x)
        return self.head(self.drop(x, training=training))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "input_dim": self.input_dim, "hidden": self.hidden,
                "blocks": self.blocks, "classes": self.classes, "dropout": self.dropout}
