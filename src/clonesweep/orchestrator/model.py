"""The base model config on the driver: read once, serialized once, checked once."""

from __future__ import annotations

import importlib
import json
from typing import Any

from clonesweep.errors import SpecError
from clonesweep.spec import check_parameters
from clonesweep.spec.model import ModelSource, SweepSpec
from clonesweep.workers.runner import import_object

__all__ = ["base_model_config"]


def base_model_config(spec: SweepSpec) -> dict[str, Any]:
    """The base model's ``serialize_keras_object`` envelope.

    A config file or ``.keras`` archive was already read by the spec loader, without Keras.
    A ``module:function`` factory is called here (this imports Keras on the driver), and its
    model serialized; the search-space paths are then checked against it.

    Raises:
        SpecError: The factory cannot be imported or called, returns no Keras model, or a
            search-space path does not match its config.
    """
    if spec.model.source is not ModelSource.FACTORY:
        assert spec.model.config is not None
        return spec.model.config
    config = _call_factory(spec)
    check_parameters(spec.parameters, config, str(spec.file))
    return config


def _call_factory(spec: SweepSpec) -> dict[str, Any]:
    import keras

    ref = spec.model.ref
    for module in spec.model.imports:
        importlib.import_module(module)
    try:
        model = import_object(ref)()
    except Exception as exc:
        raise SpecError(f"the model factory failed: {type(exc).__name__}: {exc}",
                        file=str(spec.file), field="model.factory", value=ref,
                        hint="the factory is called with no arguments and must return a "
                             "keras.Model") from exc
    if not isinstance(model, keras.Model):
        raise SpecError(f"the model factory returned {type(model).__name__}, not a keras.Model",
                        file=str(spec.file), field="model.factory", value=ref)
    config: dict[str, Any] = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    return config
