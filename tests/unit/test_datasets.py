from __future__ import annotations

import numpy as np
import pytest

from clonesweep.datasets import digits, digits_images


def test_digits_shapes_types_and_range() -> None:
    x_train, y_train, x_val, y_val = digits()
    assert x_train.shape == (1437, 64) and x_val.shape == (360, 64)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert x_train.min() >= 0.0 and x_train.max() <= 1.0
    assert set(np.unique(y_val)) == set(range(10))


def test_digits_split_follows_the_seed() -> None:
    a, b, c = digits(seed=1), digits(seed=1), digits(seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert digits(validation_split=0.5)[2].shape[0] == 899


def test_digits_images() -> None:
    x_train, _, x_val, _ = digits_images()
    assert x_train.shape == (1437, 8, 8, 1) and x_val.shape == (360, 8, 8, 1)
    assert np.array_equal(x_train.reshape(-1, 64), digits()[0])


def test_bad_split() -> None:
    with pytest.raises(ValueError, match="validation_split"):
        digits(validation_split=1.0)
