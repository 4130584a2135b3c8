"""Every kind of model Keras can rebuild goes through the clone path, params land at their
config paths, and the three seed properties hold (see seed_properties.py): functional graphs
with operation nodes, nested and shared layers, attention layers that copy one initializer
config into several weights, subclassed models and keras-hub backbones rebuilt from their
constructor arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

# One module object for the registered test classes: `custom_layers` is also what sweep
# files name in model.imports, and a second import as tests.workers.custom_layers would
# register second copies of the classes (isinstance then fails, by test order).
from custom_layers import ScaledDense, TinyClassifier
from keras import ops
from seed_properties import check_seed_properties, digests

from clonesweep.errors import ConfigPathError
from clonesweep.spec.configpaths import describe
from clonesweep.workers.materialize import MODEL_SEED, materialize
from clonesweep.workers.rebuild import rebuild

L = keras.layers
HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _fresh_session() -> Iterator[None]:
    yield
    keras.utils.clear_session()


def serialized(model: Any) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    return config


def operations_model() -> keras.Model:
    """Operation nodes (``x + 3.0``, ``relu(h) * h``, a residual ``x + y``), a shared layer
    called twice, a nested model holding an operation node, a custom registered layer."""
    inner_in = keras.Input((8,), name="inner_in")
    inner = keras.Model(inner_in, ops.tanh(L.Dense(8, name="inner_dense")(inner_in)) * 2.0,
                        name="inner")
    inp = keras.Input((4,), name="inp")
    h = L.Dense(8, name="hidden")(inp + 3.0)
    h = ops.relu(h) * h
    shared = L.Dense(8, name="shared")
    h = shared(h) + shared(ops.sigmoid(h))
    h = inner(h) + h
    h = ScaledDense(8, scale=0.5, name="scaled")(h)
    return keras.Model(inp, L.Dense(3, name="out")(h), name="ops_model")


def attention_model() -> keras.Model:
    """Layers that copy one initializer config into several weights, and their neighbours."""
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = L.Embedding(20, 8, name="embed")(tokens)
    x = x + L.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = x + L.GroupQueryAttention(4, 4, 2, name="gqa")(x, x)
    x = L.EinsumDense("abc,cd->abd", output_shape=(None, 8), name="einsum")(x)
    x = L.Bidirectional(L.GRU(4, name="gru"), name="bi")(x)
    return keras.Model(tokens, L.Dense(2, name="out")(x), name="attention")


def test_operation_nodes_and_shared_layers_rebuild_with_params_applied() -> None:
    plain = operations_model()
    config = serialized(plain)
    variant = rebuild(config, {"layers.hidden.units": 5, "layers.inner/inner_dense.units": 8,
                               "layers.scaled.scale": 2.0}, seed=1).model
    assert variant.get_layer("hidden").units == 5
    assert variant.get_layer("scaled").scale == 2.0
    assert variant.predict(np.ones((2, 4), "float32"), verbose=0).shape == (2, 3)
    # The shared layer stays one layer (one kernel) called twice.
    assert sum(v.path.startswith("shared/") for v in variant.variables) == 2
    check_seed_properties(config, plain, {"layers.hidden.units": 5})


def test_attention_sub_weights_get_their_own_seeds() -> None:
    plain = attention_model()
    config = serialized(plain)
    mat = materialize(config, {}, seed=4)
    assert {"mha/python_random", "gqa/python_random"} <= set(mat.seeds)
    assert "bi/backward_layer.config.kernel_initializer" in mat.seeds

    def distinct_projections(model: Any) -> None:
        kernels = {v.path: np.asarray(v) for v in model.variables if v.path.endswith("kernel")}
        assert not np.array_equal(kernels["mha/query/kernel"], kernels["mha/key/kernel"])
        assert not np.array_equal(kernels["mha/key/kernel"], kernels["mha/value/kernel"])
        assert not np.array_equal(kernels["gqa/key/kernel"], kernels["gqa/value/kernel"])

    check_seed_properties(config, plain, after=distinct_projections)


def test_subclassed_model_rebuilds_from_its_constructor_arguments() -> None:
    plain = TinyClassifier()
    config = serialized(plain)
    assert describe(config) == ["model.input_dim", "model.hidden", "model.blocks",
                                "model.classes", "model.dropout"]
    variant = rebuild(config, {"model.hidden": 12, "model.blocks": 3}, seed=2)
    model = variant.model
    assert isinstance(model, TinyClassifier) and (model.hidden, model.blocks) == (12, 3)
    assert model.count_params() == 6 * 12 + 12 + 2 * (12 * 12 + 12) + 12 * 3 + 3
    assert set(variant.materialized.seeds) == {MODEL_SEED, "data"}
    check_seed_properties(config, plain, {"model.hidden": 12})


def test_layer_keys_on_a_constructor_model_name_its_kind_and_keys() -> None:
    config = serialized(TinyClassifier())
    with pytest.raises(ConfigPathError) as info:
        materialize(config, {"layers.block0.units": 4}, seed=1)
    assert "cstest>TinyClassifier" in info.value.message
    assert "model.hidden" in info.value.message and "model.blocks" in info.value.message


def test_a_model_key_that_addresses_nothing_lists_the_arguments() -> None:
    config = serialized(TinyClassifier())
    with pytest.raises(ConfigPathError) as info:
        materialize(config, {"model.hiden": 4}, seed=1)
    assert info.value.field == "model.hiden"
    assert "model.hidden" in info.value.message and "did you mean 'hidden'" in str(info.value.hint)
    with pytest.raises(ConfigPathError, match="no hyperparameter"):
        materialize(config, {"model.name": "x"}, seed=1)


def test_model_keys_are_refused_on_a_layer_graph() -> None:
    with pytest.raises(ConfigPathError, match="layer graph"):
        materialize(serialized(attention_model()), {"model.units": 4}, seed=1)


def _hub() -> Any:
    return pytest.importorskip("keras_hub")


def tiny_bert(hub: Any) -> Any:
    return hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8,
                                   intermediate_dim=16, max_sequence_length=8)


def test_keras_hub_backbone_rebuilds_with_its_arguments_and_seeds() -> None:
    hub = _hub()
    plain = tiny_bert(hub)
    config = serialized(plain)
    assert "model.num_layers" in describe(config)
    model = rebuild(config, {"model.num_layers": 3, "model.dropout": 0.0}, seed=5).model
    assert type(model).__name__ == "BertBackbone" and model.num_layers == 3
    out = model({"token_ids": np.ones((1, 8), "int32"), "segment_ids": np.zeros((1, 8), "int32"),
                 "padding_mask": np.ones((1, 8), "int32")})
    assert tuple(out["pooled_output"].shape) == (1, 8)
    check_seed_properties(config, plain)


def test_keras_hub_task_takes_nested_backbone_arguments() -> None:
    hub = _hub()
    plain = hub.models.BertTextClassifier(tiny_bert(hub), num_classes=3, preprocessor=None)
    config = serialized(plain)
    model = rebuild(config, {"model.num_classes": 4,
                             "model.backbone.config.num_layers": 1}, seed=6).model
    assert model.backbone.num_layers == 1 and model.num_classes == 4
    check_seed_properties(config, plain)


_CHILD = """
import json, sys
import keras
sys.path.insert(0, sys.argv[1])
import custom_layers  # registers the test classes
try:
    import keras_hub  # registers its classes
except ImportError:
    pass
from seed_properties import digests
from clonesweep.workers.rebuild import rebuild
out = {}
for name, config in json.loads(sys.stdin.read()).items():
    weights = digests(rebuild(config, {}, seed=9).model)
    out[name] = {k.split(":", 1)[0]: d for k, (d, _) in weights.items()}
print(json.dumps(out))
"""


def test_rebuilds_are_identical_in_another_process() -> None:
    configs = {"ops": serialized(operations_model()), "attention": serialized(attention_model()),
               "subclassed": serialized(TinyClassifier())}
    try:
        import keras_hub as hub
    except ImportError:
        hub = None
    if hub is not None:
        configs["bert"] = serialized(tiny_bert(hub))
    here = {name: {k.split(":", 1)[0]: d for k, (d, _) in digests(rebuild(c, {}, seed=9).model)
                   .items()} for name, c in configs.items()}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(HERE)], input=json.dumps(configs),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == here
