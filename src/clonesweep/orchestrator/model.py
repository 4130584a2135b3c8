"""The base model config on the driver: read once, serialized once, checked once."""

from __future__ import annotations

import importlib
import json
import logging
from typing import Any

from clonesweep.errors import SpecError
from clonesweep.spec import check_parameters
from clonesweep.spec.configpaths import is_layer_graph
from clonesweep.spec.model import ModelSource, SweepSpec
from clonesweep.workers.runner import import_object

__all__ = ["base_factory_args", "base_model_config", "build_structure", "serialized"]

log = logging.getLogger(__name__)


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
        if spec.model.source is ModelSource.FILE and _normalizes(spec.model.config):
            return _archive_config(spec)
        if _normalizes(spec.model.config):
            log.warning("%s: a Normalization layer has no mean or variance in model.config: "
                        "if it was adapted, its statistics are weights, not in the config, "
                        "and every trial normalizes by mean 0 and variance 1; pass mean= and "
                        "variance= to the layer, or give the model as a .keras archive "
                        "(model.file) or a factory", spec.file)
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
        config: dict[str, Any] = json.loads(json.dumps(serialized(model), allow_nan=False))
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


def serialized(model: Any) -> dict[str, Any]:
    """``keras.saving.serialize_keras_object(model)``, with what ``adapt`` learnt in the
    config: an adapted ``Normalization`` layer keeps its statistics in weights, which a
    rebuild from the config does not have (every trial would normalize by mean 0 and
    variance 1, silently), so they go in as its ``mean`` and ``variance`` arguments (the
    layer computes the same normalization from them; the model itself is left as it was).
    """
    import keras
    import numpy as np

    inlined = []
    for layer in _all_layers(model):
        mean, variance = (getattr(layer, name, None) for name in ("adapt_mean", "adapt_variance"))
        if not isinstance(layer, keras.layers.Normalization) or layer.input_mean is not None \
                or mean is None or variance is None:
            continue
        mean, variance = np.asarray(mean), np.asarray(variance)
        if np.all(mean == 0) and np.all(variance == 1):
            continue  # never adapted: the config's rebuild is the same
        inlined.append(layer)
        layer.input_mean, layer.input_variance = mean, variance
    try:
        config: dict[str, Any] = keras.saving.serialize_keras_object(model)
    finally:
        for layer in inlined:
            layer.input_mean = layer.input_variance = None
    return config


def _all_layers(model: Any) -> list[Any]:
    """Every layer of ``model``, nested models' layers too."""
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(_all_layers(layer))
    return out


def _normalizes(config: Any) -> bool:
    """Whether a config holds a ``Normalization`` layer without ``mean`` in its config (one
    whose statistics, when adapted, are weights)."""
    if isinstance(config, dict):
        if config.get("class_name") == "Normalization" and isinstance(
                config.get("config"), dict) and config["config"].get("mean") is None:
            return True
        return any(_normalizes(v) for v in config.values())
    if isinstance(config, list):
        return any(_normalizes(v) for v in config)
    return False


def _archive_config(spec: SweepSpec) -> dict[str, Any]:
    """The ``.keras`` archive's model loaded with its weights and serialized by
    :func:`serialized`: an adapted ``Normalization``'s statistics are weights in the archive
    and would be lost by its ``config.json`` alone."""
    import keras

    for module in spec.model.imports:
        importlib.import_module(module)
    try:
        model = keras.saving.load_model(spec.model.ref, compile=False, safe_mode=True)
    except Exception as exc:
        raise SpecError(f"the .keras archive cannot be loaded: {type(exc).__name__}: {exc}",
                        file=str(spec.file), field="model.file", value=spec.model.ref,
                        hint="its Normalization layer's adapted statistics are read from its "
                             "weights; list the modules of its custom objects under "
                             "model.imports") from exc
    config: dict[str, Any] = json.loads(json.dumps(serialized(model), allow_nan=False))
    return config
