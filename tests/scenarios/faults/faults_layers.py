"""A registered layer that misbehaves on purpose while training (``model.imports``)."""

from __future__ import annotations

import time
from typing import Any

import keras


@keras.saving.register_keras_serializable(package="csfaults")
class Trap(keras.layers.Layer):
    """Identity, except in training: ``raise`` raises, ``hang`` sleeps inside the epoch,
    ``nan`` makes every activation NaN (so the loss is NaN), ``oom`` raises MemoryError."""

    def __init__(self, mode: str = "ok", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, inputs: Any, training: bool = False) -> Any:
        if training and self.mode == "raise":
            raise ValueError("trap: user code failed on purpose")
        if training and self.mode == "hang":
            time.sleep(3600)
        if training and self.mode == "oom":
            raise MemoryError("trap: out of host memory on purpose")
        if training and self.mode == "nan":
            return inputs * float("nan")
        return inputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


def build() -> keras.Model:
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, name="hidden"),
                             Trap(name="trap"),
                             keras.layers.Dense(10, activation="softmax", name="out")])
