"""The base model config on the driver: read once, serialized once, checked once."""

from __future__ import annotations

import importlib
import json
from typing import Any

from clonesweep.errors import SpecError
from clonesweep.spec import check_parameters
from clonesweep.spec.configpaths import is_layer_graph
from clonesweep.spec.model import ModelSource, SweepSpec
from clonesweep.workers.runner import import_object

__all__ = ["base_factory_args", "base_model_config", "build_structure"]


def base_model_config(spec: SweepSpec) -> dict[str, Any]:
    """The base model's ``serialize_keras_object`` envelope.

    A config file or ``.keras`` archive was already read by the spec loader, without Keras.
    A ``module:function`` factory is called here (this imports Keras on the driver), and its
    model serialized; the search-space paths are then checked against it. A factory's model
    whose config is its constructor arguments but which is a layer graph (a keras-hub
    backbone) is serialized as that graph when the search space has ``layers.*`` keys.

    Raises:
        SpecError: The factory cannot be imported or called, returns no Keras model, or a
            search-space path does not match its config.
    """
    if spec.model.source is not ModelSource.FACTORY:
        assert spec.model.config is not None
        return spec.model.config
    args = base_factory_args(spec)
    config = _call_factory(spec, args)
    # In a structural sweep a conditional layer key may exist only in other structures: the
    # driver checks it against each structure it builds.
    checked = tuple(p for p in spec.parameters if not (spec.structural and p.is_conditional))
    check_parameters(checked, config, str(spec.file))
    return config


def base_factory_args(spec: SweepSpec) -> dict[str, Any]:
    """The factory arguments of the base structure: each unconditional ``model.<argument>``
    at its constant, first choice or lower bound (conditional ones left to their default)."""
    args: dict[str, Any] = {}
    for p in spec.parameters:
        if p.path.startswith("model.") and not p.is_conditional:
            args[p.path[len("model."):]] = p.values[0] if p.values else p.low
    return args


def build_structure(spec: SweepSpec, args: dict[str, Any]) -> dict[str, Any]:
    """Call the factory with ``args`` (keyword arguments) and serialize the model it returns.

    Raises:
        SpecError: The factory fails or returns no Keras model for these arguments.
    """
    return _call_factory(spec, args)


def _call_factory(spec: SweepSpec, args: dict[str, Any] | None = None) -> dict[str, Any]:
    import keras

    ref = spec.model.ref
    args = args or {}
    for module in spec.model.imports:
        importlib.import_module(module)
    try:
        model = import_object(ref)(**args)
    except Exception as exc:
        called = ", ".join(f"{k}={v!r}" for k, v in args.items())
        raise SpecError(f"the model factory failed: {type(exc).__name__}: {exc}",
                        file=str(spec.file), field="model.factory", value=f"{ref}({called})",
                        hint="the factory is called with the model.<argument> params as "
                             "keyword arguments (none without them) and must return a "
                             "keras.Model") from exc
    if not isinstance(model, keras.Model):
        raise SpecError(f"the model factory returned {type(model).__name__}, not a keras.Model",
                        file=str(spec.file), field="model.factory", value=ref)
    try:
        config: dict[str, Any] = json.loads(
            json.dumps(keras.saving.serialize_keras_object(model), allow_nan=False))
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise SpecError(f"the factory's model cannot be serialized: {type(exc).__name__}: "
                        f"{exc}", file=str(spec.file), field="model.factory", value=ref,
                        hint="every layer's get_config() must return JSON data (numbers, "
                             "strings, lists, dicts) and include its __init__ arguments")\
            from exc
    if not is_layer_graph(config) and any(p.path.startswith("layers")
                                          for p in spec.parameters):
        # layers.* keys on a Functional subclass (a keras-hub backbone): sweep its layer
        # graph as a plain Functional model (model.<argument> keys stay factory arguments).
        from clonesweep.workers.rebuild import graph_config

        config = graph_config(model) or config
    return config
