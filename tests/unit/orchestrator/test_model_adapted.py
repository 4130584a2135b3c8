"""An adapted Normalization layer's statistics reach every trial: they are weights, which a
rebuild from the config does not have, so the driver puts them in the layer's config (a
factory's model, a model given in memory, a ``.keras`` archive). Before, every trial
normalized by mean 0 and variance 1, silently. Likewise an adapted lookup's or
TextVectorization's vocabulary (before: every trial failed, "Table not initialized")."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from clonesweep.orchestrator.model import base_model_config, serialized
from clonesweep.spec import load_sweep
from clonesweep.workers.rebuild import rebuild

X = np.random.default_rng(0).normal(5.0, 3.0, size=(64, 4)).astype("float32")


def _model(adapt: bool = True) -> keras.Model:
    norm = keras.layers.Normalization(name="norm")
    if adapt:
        norm.adapt(X)
    inner = keras.Sequential([keras.Input((4,)), norm], name="inner")  # nested: found too
    inp = keras.Input((4,))
    out = keras.layers.Dense(2, name="out")(inner(inp))
    return keras.Model(inp, out)


def _norm_config(config: dict) -> dict:
    inner = next(layer for layer in config["config"]["layers"] if layer["name"] == "inner")
    found: dict = next(layer for layer in inner["config"]["layers"]
                       if layer["class_name"] == "Normalization")["config"]
    return found


def test_the_statistics_go_in_the_config_and_the_rebuild_normalizes_the_same() -> None:
    model = _model()
    config = serialized(model)
    norm = _norm_config(config)
    np.testing.assert_allclose(np.ravel(norm["mean"]), X.mean(axis=0), rtol=1e-5)
    assert model.get_layer("inner").get_layer("norm").input_mean is None  # left as it was
    rebuilt = rebuild(json.loads(json.dumps(config)), {}, seed=1).model
    inner, again = model.get_layer("inner"), rebuilt.get_layer("inner")
    assert np.array_equal(np.asarray(inner(X)), np.asarray(again(X)))  # bitwise
    # A layer never adapted keeps its config as it was.
    assert _norm_config(serialized(_model(adapt=False)))["mean"] is None


def _archive_config(tmp_path: Path, model: keras.Model,
                    parameter: str = "layers.out.units: {values: [2]}") -> dict:
    """The base config ``run`` reads from ``model`` saved as a ``.keras`` archive."""
    model.save(tmp_path / "base.keras")
    (tmp_path / "s.yaml").write_text(f"""name: adapted
model: {{file: base.keras}}
data: {{loader: 'clonesweep.datasets:digits'}}
parameters:
  {parameter}
""")
    return base_model_config(load_sweep(tmp_path / "s.yaml"))


def test_a_keras_archive_carries_its_adapted_statistics(tmp_path: Path) -> None:
    config = _archive_config(tmp_path, _model())
    np.testing.assert_allclose(np.ravel(_norm_config(config)["mean"]), X.mean(axis=0),
                               rtol=1e-5)


def test_an_adapted_lookup_s_vocabulary_goes_in_the_config(tmp_path: Path) -> None:
    # Rebuilt without it, a lookup failed every trial: "Table not initialized".
    words = np.array([["b"], ["a"], ["b"], ["c"], ["b"]])
    strings = keras.layers.StringLookup(name="words")
    strings.adapt(words)
    numbers = keras.layers.IntegerLookup(name="ids")
    numbers.adapt(np.array([[7], [3], [7], [9]]))
    inp_s, inp_i = keras.Input((1,), dtype="string"), keras.Input((1,), dtype="int64")
    model = keras.Model([inp_s, inp_i], [strings(inp_s), numbers(inp_i)])
    archived = _archive_config(tmp_path, model, "layers.ids.num_oov_indices: {values: [1]}")
    for config in (serialized(model), archived):
        rebuilt = rebuild(json.loads(json.dumps(config)), {}, seed=1).model
        x = [words, np.array([[9], [3], [5], [7], [7]])]
        for a, b in zip(model(x), rebuilt(x), strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    assert strings.input_vocabulary is None  # the base model is left as it was


def _text_model(mode: str, name: str = "words") -> keras.Model:
    text = keras.layers.TextVectorization(
        max_tokens=30, output_mode=mode, name=name,
        output_sequence_length=6 if mode == "int" else None)
    text.adapt(["the cat sat on the mat", "a dog ran fast", "the dog and a cat"])
    inp = keras.Input((1,), dtype="string")
    inner = keras.Sequential([keras.Input((1,), dtype="string"), text], name="inner")
    out = keras.layers.Dense(2, name="out")(keras.ops.cast(inner(inp), "float32"))
    return keras.Model(inp, out)


@pytest.mark.parametrize("mode", ["int", "multi_hot", "count"])
def test_an_adapted_text_vectorization_s_vocabulary_goes_in_the_config(
        mode: str, tmp_path: Path) -> None:
    model = _text_model(mode)
    x = np.array([["the cat ran home"], ["zzz a mat"], ["dog"]])
    words = model.get_layer("inner").get_layer("words")
    for config in (serialized(model), _archive_config(tmp_path, model)):
        rebuilt = rebuild(json.loads(json.dumps(config)), {}, seed=1).model
        again = rebuilt.get_layer("inner").get_layer("words")
        assert np.array_equal(np.asarray(words(x)), np.asarray(again(x)))
    assert words.get_config()["vocabulary"] is None  # the base model is left as it was


def test_tf_idf_layers_are_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        serialized(_text_model("tf_idf"))
    assert "TextVectorization layer 'words' has tf_idf output" in caplog.text
    lookup = keras.layers.StringLookup(output_mode="tf_idf", name="lk")
    lookup.adapt(np.array([["a"], ["b"], ["a"]]))
    inp = keras.Input((1,), dtype="string")
    caplog.clear()
    with caplog.at_level("WARNING"):
        serialized(keras.Model(inp, lookup(inp)))
    assert "StringLookup layer 'lk' has tf_idf output" in caplog.text
