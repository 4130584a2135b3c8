"""materialize + rebuild on real Keras: params land where named, seeds reach every weight,
every model kind round-trips, and unsafe configs are refused."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import pytest
from custom_layers import ScaledDense  # one module object (see test_model_kinds.py)

from clonesweep.errors import ConfigPathError, RebuildError, SpecError, UnsafeConfigError
from clonesweep.spec.configpaths import index_layers, is_input_entry, is_model_entry, resolve
from clonesweep.workers.materialize import materialize
from clonesweep.workers.rebuild import build_variant, rebuild
from clonesweep.workers.seeding import DATA_ORDER
from clonesweep.workers.seedslots import RANDOM_INITIALIZERS

L = keras.layers


@pytest.fixture(autouse=True)
def _fresh_session() -> Iterator[None]:
    yield
    keras.utils.clear_session()


def sequential_mlp() -> keras.Model:
    return keras.Sequential([
        keras.Input((4,)), L.Dense(8, name="hidden"), L.Dropout(0.2, name="drop"),
        L.Dense(8, name="hidden2"), L.Dense(8, name="hidden3"), L.Dense(3, name="out"),
    ], name="mlp")


def functional_mlp() -> keras.Model:
    inp = keras.Input((4,), name="inp")
    h = L.Dense(8, name="hidden")(inp)
    h = L.Dropout(0.2, name="drop")(h)
    h = L.Dense(8, name="hidden2")(h)
    out = L.Dense(3, name="out", kernel_regularizer=keras.regularizers.L2(0.01))(h)
    return keras.Model(inp, out, name="fmlp")


def _encoder() -> keras.Model:
    x = keras.Input((4,), name="x")
    return keras.Model(x, L.Dense(8, name="dense")(x), name="encoder")


def nested_functional() -> keras.Model:
    inp = keras.Input((4,), name="inp")
    return keras.Model(inp, L.Dense(3, name="out")(_encoder()(inp)), name="outer")


def sequential_in_functional() -> keras.Model:
    head = keras.Sequential([keras.Input((4,)), L.Dense(8, name="sd"),
                             L.Dropout(0.1, name="sdrop"), L.Dense(3, name="sout")], name="head")
    inp = keras.Input((4,), name="inp")
    return keras.Model(inp, head(L.Dense(4, name="pre")(inp)), name="outer")


def functional_in_sequential() -> keras.Model:
    return keras.Sequential([keras.Input((4,)), _encoder(), L.Dense(3, name="out")], name="seq")


def custom_layer_model() -> keras.Model:
    inp = keras.Input((4,), name="inp")
    h = ScaledDense(8, scale=2.0, name="scaled")(inp)
    return keras.Model(inp, L.Dense(3, name="out")(h), name="custom")


BUILDERS: dict[str, Callable[[], keras.Model]] = {
    "sequential": sequential_mlp, "functional": functional_mlp,
    "functional_in_functional": nested_functional,
    "sequential_in_functional": sequential_in_functional,
    "functional_in_sequential": functional_in_sequential, "custom_layer": custom_layer_model,
}
# A param on a layer inside every model, to prove mutations reach nested layers.
UNITS_PARAM = {"sequential": "layers.hidden.units", "functional": "layers.hidden.units",
               "functional_in_functional": "layers.encoder/dense.units",
               "sequential_in_functional": "layers.head/sd.units",
               "functional_in_sequential": "layers.dense.units",
               "custom_layer": "layers.scaled.units"}


def config_of(builder: Callable[[], keras.Model]) -> dict[str, Any]:
    config = keras.saving.serialize_keras_object(builder())
    keras.utils.clear_session()
    return config


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(node, list) and any(isinstance(item, (dict, list)) for item in node):
        return {k: v for i, item in enumerate(node)
                for k, v in flatten(item, f"{prefix}{i}.").items()}
    return {prefix[:-1]: node}


def changed(base: dict[str, Any], new: dict[str, Any]) -> set[str]:
    """Leaves that differ, ignoring seeds and the build_config entries materialize drops."""
    a, b = flatten(base), flatten(new)
    return {k for k in a.keys() | b.keys()
            if a.get(k) != b.get(k) and not k.endswith(".seed") and ".build_config." not in k}


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    yield from flatten(node).items()


def random_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """Every weight that is not constant at init (kernels), keyed by its path."""
    return {w.path: np.asarray(w) for w in model.weights if np.ptp(np.asarray(w)) > 0}


# --- where params land ----------------------------------------------------------------


def test_mutation_lands_exactly_at_the_named_paths() -> None:
    base = config_of(functional_mlp)
    params = {"layers.hidden.units": 16, "layers.drop.rate": 0.5,
              "layers.out.kernel_regularizer.config.l2": 0.1}
    mat = materialize(base, params, seed=1)
    index = index_layers(base)
    layer_no = {path: i for i, path in enumerate(index)}
    expected = {f"config.layers.{layer_no['hidden']}.config.units",
                f"config.layers.{layer_no['drop']}.config.rate",
                f"config.layers.{layer_no['out']}.config.kernel_regularizer.config.l2"}
    assert changed(base, mat.config) == expected
    assert index_layers(mat.config)["hidden"]["config"]["units"] == 16


def test_class_selector_hits_every_dense_layer_and_a_named_param_wins() -> None:
    base = config_of(sequential_mlp)
    mat = materialize(base, {"layers.out.units": 3, "layers[Dense].units": 12}, seed=1)
    units = {p: e["config"]["units"] for p, e in index_layers(mat.config).items()
             if e["class_name"] == "Dense"}
    assert units == {"hidden": 12, "hidden2": 12, "hidden3": 12, "out": 3}
    assert len(changed(base, mat.config)) == 3


def test_class_selector_reaches_nested_layers() -> None:
    mat = materialize(config_of(sequential_in_functional), {"layers[Dropout].rate": 0.4}, seed=1)
    assert mat.layer_configs["head/sdrop"]["config"]["rate"] == 0.4


def test_optimizer_and_train_params_stay_out_of_the_model_config() -> None:
    base = config_of(functional_mlp)
    params = {"optimizer.learning_rate": 0.01, "optimizer.beta_1": 0.8,
              "train.batch_size": 64, "train.epochs": 3}
    mat = materialize(base, params, seed=3)
    assert mat.optimizer == {"learning_rate": 0.01, "beta_1": 0.8}
    assert mat.train == {"batch_size": 64, "epochs": 3}
    assert mat.config == materialize(base, {}, seed=3).config
    assert mat.config_hash == materialize(base, {}, seed=3).config_hash


def test_config_hash_is_sha256_of_canonical_json() -> None:
    import hashlib

    mat = materialize(config_of(functional_mlp), {"layers.hidden.units": 5}, seed=2)
    text = json.dumps(mat.config, sort_keys=True, separators=(",", ":"))
    assert mat.config_hash == hashlib.sha256(text.encode()).hexdigest()
    assert mat.config_hash != materialize(config_of(functional_mlp), {}, seed=2).config_hash


def test_string_initializer_param_becomes_a_seeded_envelope() -> None:
    variant = rebuild(config_of(functional_mlp),
                      {"layers.hidden.kernel_initializer": "he_normal"}, seed=4)
    init = variant.materialized.layer_configs["hidden"]["config"]["kernel_initializer"]
    assert init["class_name"] == "HeNormal" and isinstance(init["config"]["seed"], int)
    layer_init = variant.model.get_layer("hidden").kernel_initializer
    assert type(layer_init).__name__ == "HeNormal"


def test_switching_initializer_class_keeps_it_seeded() -> None:
    base = config_of(functional_mlp)
    zeros = materialize(base, {"layers.hidden.kernel_initializer.class_name": "Zeros"}, seed=1)
    assert "Zeros" in json.dumps(zeros.config)
    base2 = copy.deepcopy(base)
    index_layers(base2)["hidden"]["config"]["kernel_initializer"]["config"] = {}
    mat = materialize(base2, {"layers.hidden.kernel_initializer.class_name": "HeUniform"}, seed=1)
    assert isinstance(mat.layer_configs["hidden"]["config"]["kernel_initializer"]["config"]["seed"],
                      int)


# --- seeds ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_seed_gives_bitwise_identical_weights_and_other_seeds_differ(name: str) -> None:
    base = config_of(BUILDERS[name])
    first = random_weights(build_variant(base, seed=11))
    keras.utils.clear_session()
    again = random_weights(build_variant(base, seed=11))
    keras.utils.clear_session()
    other = random_weights(build_variant(base, seed=12))
    assert first and first.keys() == again.keys() == other.keys()
    for path in first:
        assert np.array_equal(first[path], again[path]), path
        assert not np.array_equal(first[path], other[path]), path


def test_same_shaped_kernels_in_one_model_differ() -> None:
    model = build_variant(config_of(sequential_mlp), seed=5)
    k2, k3 = (np.asarray(model.get_layer(n).kernel) for n in ("hidden2", "hidden3"))
    assert k2.shape == k3.shape and not np.array_equal(k2, k3)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_no_seed_is_left_unset(name: str) -> None:
    mat = materialize(config_of(BUILDERS[name]), {}, seed=9)
    seeds = {k: v for k, v in walk(mat.config) if k.endswith(".seed")}
    assert seeds and all(type(v) is int for v in seeds.values()), seeds
    for node in _dicts(mat.config):
        if node.get("class_name") in RANDOM_INITIALIZERS:
            assert type(node["config"]["seed"]) is int
    assert set(mat.seeds.values()) - {mat.seeds[DATA_ORDER]} == set(seeds.values())
    assert len(set(seeds.values())) == len(seeds)


def test_seed_labels_name_the_layer_and_slot() -> None:
    mat = materialize(config_of(sequential_in_functional), {}, seed=1)
    assert set(mat.seeds) == {"pre/kernel_initializer", "head/sd/kernel_initializer",
                              "head/sdrop/seed", "head/sout/kernel_initializer", DATA_ORDER}
    assert mat.seeds == materialize(config_of(sequential_in_functional), {}, seed=1).seeds
    assert mat.seeds[DATA_ORDER] != materialize(config_of(functional_mlp), {}, seed=2).seeds[
        DATA_ORDER]


def _dicts(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _dicts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dicts(item)


# --- round trips ----------------------------------------------------------------------


def _layer_facts(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that matter, per layer path: units, rate, scale and every seed."""
    facts: dict[str, Any] = {}
    for path, entry in index_layers(config).items():
        if is_input_entry(entry) or is_model_entry(entry):
            continue
        for key, value in flatten(entry["config"]).items():
            if key in ("units", "rate", "scale") or key.endswith("seed"):
                facts[f"{path}:{key}"] = value
    return facts


@pytest.mark.parametrize("name", list(BUILDERS))
def test_round_trip(name: str) -> None:
    base = config_of(BUILDERS[name])
    params = {UNITS_PARAM[name]: 6}
    variant = rebuild(base, params, seed=21)
    rebuilt = keras.saving.serialize_keras_object(variant.model)
    expected = _layer_facts(variant.materialized.config)
    target = resolve(base, UNITS_PARAM[name])[0].layer_path
    assert expected[f"{target}:units"] == 6
    assert _layer_facts(rebuilt) == expected
    assert list(index_layers(rebuilt)) == list(index_layers(base))
    assert variant.model.predict(np.zeros((2, 4), "float32"), verbose=0).shape == (2, 3)
    # The materialized config also builds on its own, to the same weights.
    direct = keras.saving.deserialize_keras_object(copy.deepcopy(variant.materialized.config))
    for a, b in zip(direct.weights, variant.model.weights, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_units_param_reaches_the_nested_layer_for_each_outer_kind() -> None:
    for name in ("functional_in_functional", "sequential_in_functional",
                 "functional_in_sequential"):
        variant = rebuild(config_of(BUILDERS[name]), {UNITS_PARAM[name]: 6}, seed=1)
        inner_name, layer = {"functional_in_functional": ("encoder", "dense"),
                             "sequential_in_functional": ("head", "sd"),
                             "functional_in_sequential": ("encoder", "dense")}[name]
        inner = variant.model.get_layer(inner_name).get_layer(layer)
        assert inner.units == 6 and inner.kernel.shape[-1] == 6, name
        keras.utils.clear_session()


def test_custom_layer_params_apply() -> None:
    variant = rebuild(config_of(custom_layer_model), {"layers[ScaledDense].scale": 0.5}, seed=1)
    layer = variant.model.get_layer("scaled")
    assert isinstance(layer, ScaledDense) and layer.scale == 0.5


def test_build_variant_accepts_a_model_a_dict_and_json() -> None:
    model = functional_mlp()
    base = keras.saving.serialize_keras_object(model)
    outs = [build_variant(src, {"layers.hidden.units": 5}, seed=3)
            for src in (model, base, json.dumps(base))]
    for out in outs:
        assert out.get_layer("hidden").units == 5
        assert np.array_equal(np.asarray(out.get_layer("hidden").kernel),
                              np.asarray(outs[0].get_layer("hidden").kernel))


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", 42, {"layers": []}])
def test_build_variant_refuses_other_inputs(bad: Any) -> None:
    with pytest.raises(SpecError):
        build_variant(bad, seed=1)


# --- refusals and errors --------------------------------------------------------------


def test_lambda_layer_is_refused_before_keras_sees_it() -> None:
    inp = keras.Input((4,), name="inp")
    out = L.Lambda(lambda t: t * 2, name="doubler")(L.Dense(4, name="hidden")(inp))
    base = keras.saving.serialize_keras_object(keras.Model(inp, out))
    with pytest.raises(UnsafeConfigError, match="Lambda layer \\('doubler'\\)"):
        rebuild(base, {"layers.hidden.units": 3}, seed=1)


@pytest.mark.parametrize("value", ["https://evil.example/vocab.txt", "/etc/passwd", "./v.txt",
                                   "../secrets", "~/.ssh/id_rsa", "data/vocab.txt",
                                   ["relu", "file:///x"]])
def test_path_or_url_values_are_refused(value: Any) -> None:
    with pytest.raises(UnsafeConfigError, match="file path or URL"):
        materialize(config_of(functional_mlp), {"layers.hidden.activation": value}, seed=1)


@pytest.mark.parametrize("value", [{"a": 1}, object(), float("nan"), [[[1]]]])
def test_non_json_values_are_refused(value: Any) -> None:
    with pytest.raises(SpecError) as info:
        materialize(config_of(functional_mlp), {"layers.hidden.units": value}, seed=1)
    assert info.value.field == "layers.hidden.units"


def test_unknown_paths_raise_config_path_errors() -> None:
    with pytest.raises(ConfigPathError, match="the layers are: inp, hidden, drop"):
        rebuild(config_of(functional_mlp), {"layers.hiden.units": 3}, seed=1)


def test_unregistered_class_hints_at_registration() -> None:
    base = config_of(functional_mlp)
    entry = index_layers(base)["hidden"]
    entry.update(class_name="Mystery", module="nowhere.layers", registered_name="nowhere>Mystery")
    with pytest.raises(RebuildError) as info:
        rebuild(base, {}, seed=1)
    text = str(info.value)
    assert "register_keras_serializable" in text and "model.imports" in text
    assert "Mystery" in text


def test_incompatible_shapes_raise_rebuild_error() -> None:
    with pytest.raises(RebuildError, match="could not rebuild"):
        rebuild(config_of(sequential_in_functional), {"layers.pre.units": 7}, seed=1)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_base_config_is_never_mutated_and_can_be_reused(name: str) -> None:
    base = config_of(BUILDERS[name])
    before = copy.deepcopy(base)
    materialize(base, {UNITS_PARAM[name]: 5}, seed=1)
    first = rebuild(base, {UNITS_PARAM[name]: 5}, seed=1)
    second = rebuild(base, {UNITS_PARAM[name]: 5}, seed=1)
    assert base == before
    assert first.materialized.config_hash == second.materialized.config_hash
    assert len(second.model.layers) == len(first.model.layers) > 0
    assert [w.shape for w in second.model.weights] == [w.shape for w in first.model.weights]


def test_wrapped_layers_are_mutated_and_seeded() -> None:
    inp = keras.Input((5, 3), name="inp")
    h = L.Bidirectional(L.LSTM(4, name="lstm"), name="bi")(inp)
    base = keras.saving.serialize_keras_object(keras.Model(inp, L.Dense(2, name="out")(h)))
    keras.utils.clear_session()
    params = {"layers.bi.layer.config.units": 6, "layers.bi.backward_layer.config.units": 6}
    variant = rebuild(base, params, seed=3)
    assert {"bi/layer.config.kernel_initializer", "bi/backward_layer.config.seed",
            "bi/layer.config.seed"} <= set(variant.materialized.seeds)
    assert variant.model.get_layer("bi").forward_layer.units == 6
    assert variant.model.predict(np.zeros((1, 5, 3), "float32"), verbose=0).shape == (1, 2)
    again = rebuild(base, params, seed=3).model
    for a, b in zip(variant.model.weights, again.weights, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
