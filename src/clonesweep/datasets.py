"""Small bundled data sets for demos and tests (scikit-learn's 8x8 digits, no download).

A data loader is any ``module:function`` returning ``(x_train, y_train, x_val, y_val)``;
these two are the defaults the sample sweeps in ``configs/`` use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["digits", "digits_images"]

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def digits(validation_split: float = 0.2, seed: int = 0, limit: int | None = None) -> Arrays:
    """The 1,797 digits as flat vectors: x of shape (n, 64) float32 in [0, 1], y int32.

    Args:
        validation_split: Fraction held out for validation.
        seed: Seeds the split, so the same seed gives the same split (seed 0 gives the split
            of the reference benchmark in bench/).
        limit: Use only the first ``limit`` samples (smoke tests, quick demos).

    Returns:
        ``(x_train, y_train, x_val, y_val)``.

    Example:
        >>> x_train, y_train, x_val, y_val = digits()
        >>> x_train.shape, x_val.shape
        ((1437, 64), (360, 64))
    """
    if not 0.0 < validation_split < 1.0:
        raise ValueError(f"validation_split must lie in (0, 1), received: {validation_split!r}")
    from sklearn.datasets import load_digits  # sklearn is slow to import: only when called
    from sklearn.model_selection import train_test_split

    bunch: Any = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int32)
    if limit is not None:
        if limit < 10:
            raise ValueError(f"limit must be at least 10 samples, received: {limit!r}")
        x, y = x[:limit], y[:limit]
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=validation_split, random_state=seed
    )
    return x_train, y_train, x_val, y_val


def digits_images(validation_split: float = 0.2, seed: int = 0,
                  limit: int | None = None) -> Arrays:
    """Like :func:`digits`, with x shaped (n, 8, 8, 1) for convolutional models.

    Example:
        >>> digits_images()[0].shape
        (1437, 8, 8, 1)
    """
    x_train, y_train, x_val, y_val = digits(validation_split, seed, limit)
    return x_train.reshape(-1, 8, 8, 1), y_train, x_val.reshape(-1, 8, 8, 1), y_val
