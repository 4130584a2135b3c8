"""Data loaders that return what a sweep must refuse before it runs (digits: 64 features,
10 classes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from clonesweep.datasets import digits


def _digits() -> tuple[Any, Any, Any, Any]:
    return digits(limit=200)


def strings() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return x.astype(str), y, xv.astype(str), yv


def three_tuple() -> tuple[Any, ...]:
    x, y, xv, _ = _digits()
    return x, y, xv


def all_nan() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return np.full_like(x, np.nan), y, np.full_like(xv, np.nan), yv


def some_inf() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    x = x.copy()
    x[3, 5] = np.inf
    return x, y, xv, yv


def nan_labels() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return x, y, xv, np.where(np.arange(len(yv)) == 0, np.nan, yv.astype("float32"))


def labels_out_of_range() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return x, y + 10, xv, yv


def negative_labels() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return x, y, xv, yv - 1


def fractional_labels() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return x, y.astype("float32") + 0.5, xv, yv


def wrong_width() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return x[:, :32], y, xv[:, :32], yv


def lengths_differ() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return x, y[:-3], xv, yv


def object_arrays() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return x.astype(object), y, xv, yv


def plain_lists() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return x.tolist(), y.tolist(), xv.tolist(), yv.tolist()


def empty_train() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return x[:0], y[:0], xv, yv


def not_a_tuple() -> dict[str, Any]:
    x, y, _, _ = _digits()
    return {"x": x, "y": y}


def raises() -> tuple[Any, ...]:
    raise FileNotFoundError("/data/digits.npz")


def complex_inputs() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return x.astype(complex), y, xv, yv


def one_hot_labels_for_sparse_loss() -> tuple[Any, ...]:
    x, y, xv, yv = _digits()
    return x, np.eye(10)[y], xv, np.eye(10)[yv]


NOT_CALLABLE = 42
