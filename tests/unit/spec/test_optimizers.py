"""The static optimizer table matches the installed Keras, so it cannot drift."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from clonesweep.spec.optimizers import OPTIMIZER_KEYS, optimizer_keys


def _keras_table() -> dict[str, frozenset[str]]:
    keras = pytest.importorskip("keras")
    table: dict[str, frozenset[str]] = {}
    for _, cls in inspect.getmembers(keras.optimizers, inspect.isclass):
        if not issubclass(cls, keras.optimizers.Optimizer):
            continue
        name = cls.__name__.lower()
        try:
            optimizer: Any = keras.optimizers.get(name)  # what a sweep file's name resolves to
        except (ValueError, TypeError, KeyError):
            continue  # not reachable by name (Lamb) or needs arguments (wrappers)
        if type(optimizer).__name__ == cls.__name__:
            table[name] = frozenset(optimizer.get_config())
    return table


def test_table_matches_keras() -> None:
    assert _keras_table() == OPTIMIZER_KEYS


def test_optimizer_keys() -> None:
    adam = optimizer_keys("Adam")
    assert adam is not None
    assert "learning_rate" in adam and "beta_1" in adam
    assert "name" not in adam
    assert optimizer_keys("my_pkg>Custom") is None
