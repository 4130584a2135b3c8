"""Every model in ``keras.applications`` (weights=None, a small input, 10 classes) rebuilds
through the clone path with a param applied at its config path, and the three seed
properties hold on it (see seed_properties.py).

The full corpus builds each of the 40 models four times (Keras's own model, then three
variants) and is marked ``slow``: 38 slow models in 47 minutes on 2 cores shared with seven
other test runs (load average 20-30); ResNet50 took 13 s, the largest (ConvNeXtXLarge,
EfficientNetB5, DenseNet201) about 4 minutes each; 13 minutes on a quieter machine. CI runs
slow tests too, so the full corpus also waits for an opt-in:
``CLONESWEEP_FULL_CORPUS=1 pytest -m slow tests/unit/workers/test_rebuild_applications.py``.
The default run keeps a fast subset:
MobileNetV3Small (operation nodes: hard sigmoid written as ``x + 3.0``, ``relu6(x) / 6``)
and MobileNetV2.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import keras
import pytest

try:
    from tests.workers.seed_properties import check_seed_properties
except ImportError:  # tests/ is not a package: pytest put this folder on sys.path
    from seed_properties import check_seed_properties  # type: ignore[no-redef]

# The smallest input each model accepts where 32x32 is refused.
SIZES = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
FAST = ("MobileNetV3Small", "MobileNetV2")
NAMES = sorted(name for name in dir(keras.applications) if name[:1].isupper())
# Conv2D is in every model; switching its bias off changes the weights, not the shapes.
PARAM = "layers[Conv2D].use_bias"


@pytest.fixture(autouse=True)
def _fresh_session() -> Iterator[None]:
    yield
    keras.utils.clear_session()


def build(name: str) -> keras.Model:
    size = SIZES.get(name, 32)
    model: keras.Model = getattr(keras.applications, name)(
        input_shape=(size, size, 3), weights=None, classes=10)
    return model


def corpus() -> list[Any]:
    full = pytest.mark.skipif(not os.environ.get("CLONESWEEP_FULL_CORPUS"),
                              reason="the full corpus runs with CLONESWEEP_FULL_CORPUS=1")
    return [pytest.param(name, id=name, marks=() if name in FAST else (pytest.mark.slow, full))
            for name in NAMES]


def test_the_corpus_is_all_of_keras_applications() -> None:
    assert len(NAMES) >= 38 and set(FAST) <= set(NAMES)


@pytest.mark.parametrize("name", corpus())
def test_application_rebuilds_with_params_and_seeds(name: str) -> None:
    plain = build(name)
    config: dict[str, Any] = json.loads(json.dumps(keras.saving.serialize_keras_object(plain)))

    def param_applied(model: Any) -> None:
        convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
        assert convs and not any(layer.use_bias for layer in convs)
        assert len(model.layers) == len(plain.layers)

    check_seed_properties(config, plain, {PARAM: False}, after=param_applied)
