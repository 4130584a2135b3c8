"""A registered layer that misbehaves on purpose while training, and a callback that holds a
trial at an epoch until the test lets it go (both through ``model.imports``)."""

from __future__ import annotations

import os
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


@keras.saving.register_keras_serializable(package="csfaults")
class HoldAt(keras.callbacks.Callback):
    """Waits at the start of epoch ``epoch`` (0-based) and every later one until the file
    ``release`` exists (at most ``max_s`` seconds): a test kills the worker in that state,
    then writes the file, so the retry runs on. A kill that waits on this state, not on a
    trial lasting long enough, holds however loaded the machine is."""

    def __init__(self, epoch: int, release: str, max_s: float = 600.0) -> None:
        super().__init__()
        self.epoch, self.release, self.max_s = int(epoch), str(release), float(max_s)

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        end = time.monotonic() + self.max_s
        while epoch >= self.epoch and not os.path.exists(self.release) and \
                time.monotonic() < end:
            time.sleep(0.05)

    def get_config(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "release": self.release, "max_s": self.max_s}


def build() -> keras.Model:
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, name="hidden"),
                             Trap(name="trap"),
                             keras.layers.Dense(10, activation="softmax", name="out")])
