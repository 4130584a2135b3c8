"""Search-space keys: syntax, indexing of (nested) model configs, resolution and its errors."""

from __future__ import annotations

import copy
from typing import Any

import keras
import pytest

from clonesweep.errors import ConfigPathError, SpecError
from clonesweep.spec.configpaths import (
    PathKind,
    Target,
    describe,
    index_layers,
    parse_key,
    resolve,
)


@pytest.fixture(scope="module")
def nested_config() -> dict[str, Any]:
    """top: inp -> encoder(x -> dense) -> head(Sequential: sd -> sdrop) -> dense -> out."""
    x = keras.Input((4,), name="x")
    encoder = keras.Model(x, keras.layers.Dense(8, name="dense")(x), name="encoder")
    head = keras.Sequential([keras.Input((8,), name="input_layer"),
                             keras.layers.Dense(6, name="sd"),
                             keras.layers.Dropout(0.1, name="sdrop")], name="head")
    inp = keras.Input((4,), name="inp")
    h = keras.layers.Dense(5, name="dense")(head(encoder(inp)))
    out = keras.layers.Dense(2, name="out", kernel_regularizer=keras.regularizers.L2(0.01))(h)
    config = keras.saving.serialize_keras_object(keras.Model(inp, out, name="top"))
    keras.utils.clear_session()
    return config


@pytest.mark.parametrize(
    ("key", "kind", "keys", "layer", "cls"),
    [
        ("layers.hidden.units", PathKind.LAYER, ("units",), "hidden", None),
        ("layers.hidden.kernel_regularizer.config.l2", PathKind.LAYER,
         ("kernel_regularizer", "config", "l2"), "hidden", None),
        ("layers.encoder/dense.units", PathKind.LAYER, ("units",), "encoder/dense", None),
        ("layers[Dense].units", PathKind.LAYER, ("units",), None, "Dense"),
        ("layers[cstest>ScaledDense].scale", PathKind.LAYER, ("scale",), None,
         "cstest>ScaledDense"),
        ("optimizer.learning_rate", PathKind.OPTIMIZER, ("learning_rate",), None, None),
        ("train.batch_size", PathKind.TRAIN, ("batch_size",), None, None),
    ],
)
def test_parse_key_accepts_every_form(key: str, kind: PathKind, keys: tuple[str, ...],
                                      layer: str | None, cls: str | None) -> None:
    parsed = parse_key(key)
    assert (parsed.kind, parsed.keys, parsed.layer_name, parsed.class_name) == (
        kind, keys, layer, cls)
    assert parsed.key == key


@pytest.mark.parametrize("key", [
    "", "layers", "layers.hidden", "layers..units", "layers.hidden.", "hidden.units",
    "layers[Dense]", "layers[].units", "layers[Dense]units", "optimizer", "optimizer.",
    "train..epochs", "layers./dense.units", "layers.a//b.units", "layers.hid den.units",
])
def test_parse_key_rejects_malformed_keys_with_the_accepted_forms(key: str) -> None:
    with pytest.raises(ConfigPathError) as info:
        parse_key(key)
    assert info.value.field == key
    assert "layers[<ClassName>]" in str(info.value.hint)
    assert isinstance(info.value, SpecError)


def test_index_layers_walks_nested_models_in_order(nested_config: dict[str, Any]) -> None:
    index = index_layers(nested_config)
    assert list(index) == ["inp", "encoder", "encoder/x", "encoder/dense", "head",
                           "head/input_layer", "head/sd", "head/sdrop", "dense", "out"]
    # The same dict objects as in the config, so callers see their own mutations.
    assert index["out"] is nested_config["config"]["layers"][-1]
    assert index["head/sd"]["config"]["units"] == 6


def test_index_layers_accepts_a_bare_get_config_dict(nested_config: dict[str, Any]) -> None:
    assert list(index_layers(nested_config["config"])) == list(index_layers(nested_config))


def test_index_layers_refuses_a_config_without_layers() -> None:
    with pytest.raises(ConfigPathError, match="lists no layers"):
        index_layers({"units": 3})
    # An envelope without a layer list: a model built from its constructor arguments.
    with pytest.raises(ConfigPathError, match="a Dense whose config is its constructor") as info:
        index_layers({"class_name": "Dense", "config": {"name": "d", "units": 3}})
    assert "its keys are: model.units" in info.value.message


def test_resolve_a_unique_name_at_any_depth(nested_config: dict[str, Any]) -> None:
    assert resolve(nested_config, "layers.sd.units") == (Target("head/sd", ("units",)),)
    assert resolve(nested_config, "layers.out.kernel_regularizer.config.l2") == (
        Target("out", ("kernel_regularizer", "config", "l2")),)


def test_a_top_level_name_is_its_own_qualified_path(nested_config: dict[str, Any]) -> None:
    assert resolve(nested_config, "layers.dense.units") == (Target("dense", ("units",)),)
    assert resolve(nested_config, "layers.encoder/dense.units") == (
        Target("encoder/dense", ("units",)),)


def test_resolve_an_ambiguous_name_lists_the_qualified_options(
        nested_config: dict[str, Any]) -> None:
    config = copy.deepcopy(nested_config)
    index = index_layers(config)
    index["dense"]["config"]["name"] = index["dense"]["name"] = "mid"
    index["head/sd"]["config"]["name"] = "dense"
    with pytest.raises(ConfigPathError) as info:
        resolve(config, "layers.dense.units")
    text = str(info.value)
    assert "ambiguous" in text and "encoder/dense, head/dense" in text
    assert "layers.encoder/dense.units" in text
    assert resolve(config, "layers.head/dense.units") == (Target("head/dense", ("units",)),)


def test_resolve_a_class_selector_hits_every_layer_of_the_class(
        nested_config: dict[str, Any]) -> None:
    targets = resolve(nested_config, "layers[Dense].units")
    assert [t.layer_path for t in targets] == ["encoder/dense", "head/sd", "dense", "out"]
    assert resolve(nested_config, "layers[Dropout].rate") == (Target("head/sdrop", ("rate",)),)


def test_resolve_an_unknown_layer_lists_the_layers_and_suggests(
        nested_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigPathError) as info:
        resolve(nested_config, "layers.outt.units")
    text = str(info.value)
    assert "no layer named 'outt'" in text
    assert "head/sd" in text and "encoder/dense" in text
    assert "did you mean 'out'" in text
    assert info.value.field == "layers.outt.units"


def test_resolve_an_unknown_class_lists_the_classes_present(
        nested_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigPathError) as info:
        resolve(nested_config, "layers[Conv2D].filters")
    text = str(info.value)
    assert "no layer of class 'Conv2D'" in text
    for cls in ("Dense", "Dropout", "Functional", "Sequential", "InputLayer"):
        assert cls in text


def test_resolve_an_unknown_config_key_lists_the_layers_keys(
        nested_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigPathError) as info:
        resolve(nested_config, "layers.out.unitz")
    text = str(info.value)
    assert "has no key 'unitz'" in text
    for key in ("units", "activation", "kernel_initializer", "use_bias"):
        assert key in text
    assert "did you mean 'units'" in text


def test_resolve_an_unknown_nested_key_lists_the_nested_keys(
        nested_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigPathError, match=r"has no key 'l1'; its keys are: l2"):
        resolve(nested_config, "layers.out.kernel_regularizer.config.l1")


def test_resolve_refuses_to_descend_into_null(nested_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigPathError) as info:
        resolve(nested_config, "layers.sd.kernel_regularizer.config.l2")
    assert "null" in str(info.value)
    assert "layers.head/sd.kernel_regularizer" in str(info.value.hint)
    # Setting the null value itself is fine.
    assert resolve(nested_config, "layers.sd.kernel_regularizer") == (
        Target("head/sd", ("kernel_regularizer",)),)


def test_resolve_refuses_to_descend_into_a_scalar(nested_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigPathError, match="has no key 'x'"):
        resolve(nested_config, "layers.out.units.x")


def test_a_class_selector_must_resolve_on_every_layer(nested_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigPathError, match="null"):
        resolve(nested_config, "layers[Dense].kernel_regularizer.config.l2")


@pytest.mark.parametrize("key", ["layers.inp.batch_shape", "layers[InputLayer].batch_shape",
                                 "layers.encoder.trainable", "layers[Sequential].trainable"])
def test_input_layers_and_nested_models_cannot_be_targeted(
        nested_config: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigPathError, match=r"InputLayer|nested model"):
        resolve(nested_config, key)


def test_list_elements_are_addressed_by_index(nested_config: dict[str, Any]) -> None:
    config = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Conv2D", "config": {"name": "conv", "kernel_size": [3, 3]}}]}}
    assert resolve(config, "layers.conv.kernel_size.1") == (
        Target("conv", ("kernel_size", "1")),)
    with pytest.raises(ConfigPathError, match="list of 2 items"):
        resolve(config, "layers.conv.kernel_size.2")


@pytest.mark.parametrize("key", ["optimizer.learning_rate", "train.epochs"])
def test_resolve_refuses_non_layer_keys(nested_config: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigPathError, match="do not address the model config"):
        resolve(nested_config, key)


def test_resolve_never_mutates_the_config(nested_config: dict[str, Any]) -> None:
    before = copy.deepcopy(nested_config)
    resolve(nested_config, "layers[Dense].units")
    assert nested_config == before


def test_describe_lists_addressable_leaves(nested_config: dict[str, Any]) -> None:
    paths = describe(nested_config)
    assert "layers.out.units" in paths
    assert "layers.head/sdrop.rate" in paths
    assert "layers.out.kernel_regularizer.config.l2" in paths
    assert "layers.encoder/dense.kernel_initializer.config.seed" in paths
    assert not any(p.startswith(("layers.inp.", "layers.encoder.", "layers.head."))
                   for p in paths)
    for path in paths:
        assert resolve(nested_config, path)


def test_layer_names_cannot_be_swept(nested_config: dict[str, Any]) -> None:
    with pytest.raises(ConfigPathError, match="names cannot be swept"):
        resolve(nested_config, "layers.out.name")
