"""The four digits model shapes: each builds at its input shape, at the sizes asked."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from clonesweep.examples import shapes
from clonesweep.examples.shapes import INPUT_SHAPES, KINDS, digits_shape


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_predicts_ten_classes_from_its_input_shape(kind: str) -> None:
    model = digits_shape(kind, hidden=8, filters=4, embed=8, heads=1)
    out = model.predict(np.zeros((3, *INPUT_SHAPES[kind]), "float32"), verbose=0)
    assert out.shape == (3, 10)
    assert model.get_layer("drop") is not None and model.get_layer("out").units == 10


def test_sizes_reach_their_layers() -> None:
    assert digits_shape("mlp", hidden=5).get_layer("hidden").units == 5
    assert digits_shape("transformer", heads=3).get_layer("mha").num_heads == 3
    assert digits_shape("recurrent", hidden=6).get_layer("rnn").units == 6


def test_an_unknown_kind_names_the_kinds() -> None:
    with pytest.raises(ValueError, match=r"kind must be one of .*'mlp'.* got kind='rnn'"):
        digits_shape("rnn")


def test_docstring_example_holds() -> None:
    assert doctest.testmod(shapes).failed == 0
