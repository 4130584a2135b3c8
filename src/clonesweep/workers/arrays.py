"""The data a loader returns (an array, or a tuple / list / dict of arrays): size, index, hash.

No Keras here.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

__all__ = ["as_arrays", "data_fingerprint", "length", "take", "window"]


def length(x: Any) -> int:
    """The number of samples in ``x``."""
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    if isinstance(x, (tuple, list)):
        return len(x[0])
    return len(x)


def take(x: Any, order: np.ndarray) -> Any:
    """``x`` at the sample indices ``order``, in the same structure."""
    if isinstance(x, dict):
        return {k: np.asarray(v)[order] for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(np.asarray(v)[order] for v in x)
    return np.asarray(x)[order]


def window(x: Any, start: int, stop: int) -> Any:
    """Samples ``start:stop`` of ``x``, in the same structure (views, not copies)."""
    if isinstance(x, dict):
        return {k: v[start:stop] for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(v[start:stop] for v in x)
    return x[start:stop]


def as_arrays(x: Any) -> Any:
    """``x`` as numpy arrays in the same structure (an array, or a dict / list / tuple of
    arrays: the targets or predictions of a model of several outputs)."""
    if isinstance(x, dict):
        return {k: np.asarray(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(np.asarray(v) for v in x)
    return np.asarray(x)


def data_fingerprint(arrays: Any) -> str:
    """sha256 over the arrays' dtypes, shapes and bytes (nested tuples/lists/dicts too)."""
    digest = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, dict):
            for key in sorted(x):
                digest.update(str(key).encode())
                feed(x[key])
        elif isinstance(x, (tuple, list)):
            for item in x:
                feed(item)
        else:
            a = np.ascontiguousarray(np.asarray(x))
            digest.update(f"{a.dtype.str}{a.shape}".encode())
            digest.update(a.tobytes())

    feed(arrays)
    return digest.hexdigest()
