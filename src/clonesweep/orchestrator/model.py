"""The base model config on the driver: read once, serialized once, checked once."""

from __future__ import annotations

import functools
import importlib
import json
import logging
from pathlib import Path
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
        adaptable = _adaptable(spec.model.config)
        if spec.model.source is ModelSource.FILE and adaptable:
            return _archive_config(spec)
        if adaptable:
            log.warning("%s: a %s layer has no %s in model.config: if it was adapted, what "
                        "it learnt is not in the config (a Normalization would normalize by "
                        "mean 0 and variance 1 in every trial); pass it to the layer, or give "
                        "the model as a .keras archive (model.file) or a factory",
                        spec.file, adaptable, _ADAPTED[adaptable])
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
    layer computes the same normalization from them); an adapted ``StringLookup`` or
    ``IntegerLookup`` keeps its vocabulary in a table (a rebuilt one fails: "Table not
    initialized"), so it goes in as its ``vocabulary`` (not for ``tf_idf`` output, whose
    weights stay out); so does an adapted ``TextVectorization``'s (its config holds no
    vocabulary after ``adapt``: it is put in the serialized config under the layer's name;
    ``tf_idf`` output is left out, with a warning: its weights have no public reader). The
    model itself is left as it was.
    """
    import keras
    import numpy as np

    inlined: list[tuple[Any, str]] = []  # (layer, attribute to set back to None)
    texts: dict[str, list[str] | None] = {}  # an adapted TextVectorization's name: its words
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.TextVectorization):
            _text_vocabulary(layer, texts)
            continue
        if isinstance(layer, (keras.layers.StringLookup, keras.layers.IntegerLookup)):
            vocabulary = layer.get_vocabulary(include_special_tokens=False) if \
                layer.input_vocabulary is None else []
            if vocabulary and layer.output_mode == "tf_idf":
                _tf_idf_warning(layer)
            elif vocabulary:
                inlined.append((layer, "input_vocabulary"))  # adapted: a table, not config
                layer.input_vocabulary = list(vocabulary)
        elif isinstance(layer, keras.layers.Normalization) and layer.input_mean is None and \
                getattr(layer, "adapt_mean", None) is not None:  # built without mean=
            mean, variance = np.asarray(layer.adapt_mean), np.asarray(layer.adapt_variance)
            if np.any(mean != 0) or np.any(variance != 1):  # adapted: weights, not config
                inlined += [(layer, "input_mean"), (layer, "input_variance")]
                layer.input_mean, layer.input_variance = mean, variance
    try:
        config: dict[str, Any] = keras.saving.serialize_keras_object(model)
    finally:
        for layer, attribute in inlined:
            setattr(layer, attribute, None)
    if texts:
        _put_text_vocabularies(config, texts)
    return config


def _text_vocabulary(layer: Any, texts: dict[str, list[str] | None]) -> None:
    """Note an adapted ``TextVectorization``'s vocabulary under its name (None where two
    such layers of one name differ: neither can be told apart in the config)."""
    config = layer.get_config()
    if config.get("vocabulary") is not None:
        return  # given to the constructor: in the config already
    words = [str(w) for w in layer.get_vocabulary(include_special_tokens=False)]
    if not words:
        return  # never adapted
    if config.get("output_mode") == "tf_idf":
        _tf_idf_warning(layer)
        return
    if texts.get(layer.name, words) != words:
        log.warning("two adapted TextVectorization layers are named %r: their vocabularies "
                    "cannot be told apart in the config and neither is carried to the "
                    "workers; give them names of their own", layer.name)
        texts[layer.name] = None
    elif layer.name not in texts:
        texts[layer.name] = words


def _tf_idf_warning(layer: Any) -> None:
    log.warning("the adapted %s layer %r has tf_idf output: its document frequencies are not "
                "in its config and cannot be carried to the workers (every trial would fail "
                "with 'Table not initialized'); give it vocabulary= and idf_weights= when you "
                "build it", type(layer).__name__, layer.name)


def _put_text_vocabularies(config: Any, texts: dict[str, list[str] | None]) -> None:
    """Put each adapted ``TextVectorization``'s vocabulary in its entry of ``config``."""
    if isinstance(config, dict):
        inner = config.get("config")
        if config.get("class_name") == "TextVectorization" and isinstance(inner, dict) \
                and inner.get("vocabulary") is None:
            words = texts.get(inner.get("name", ""))
            if words:
                inner["vocabulary"] = list(words)
        for value in config.values():
            _put_text_vocabularies(value, texts)
    elif isinstance(config, list):
        for value in config:
            _put_text_vocabularies(value, texts)


def _all_layers(model: Any) -> list[Any]:
    """Every layer of ``model``, nested models' layers too."""
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(_all_layers(layer))
    return out


#: Layers whose adapted state is not in their config when ``adapt`` made it: the argument
#: that carries it.
_ADAPTED = {"Normalization": "mean", "StringLookup": "vocabulary",
            "IntegerLookup": "vocabulary", "TextVectorization": "vocabulary"}


def _adaptable(config: Any) -> str | None:
    """The class of a layer in ``config`` whose adapted state, if any, is not in its config
    (a ``Normalization`` without ``mean``, a lookup without ``vocabulary``), or None."""
    if isinstance(config, dict):
        name, inner = config.get("class_name"), config.get("config")
        if name in _ADAPTED and isinstance(inner, dict) and inner.get(_ADAPTED[name]) is None:
            return str(name)
        return next((c for v in config.values() if (c := _adaptable(v))), None)
    if isinstance(config, list):
        return next((c for v in config if (c := _adaptable(v))), None)
    return None


def _archive_config(spec: SweepSpec) -> dict[str, Any]:
    """The ``.keras`` archive's model loaded with its weights and serialized by
    :func:`serialized`: an adapted ``Normalization``'s statistics (weights) and a lookup's
    vocabulary (an asset) are in the archive, not in its ``config.json``. Loaded once per
    process and version of the file (``run`` asks for the base config in its checks and
    again to start the sweep)."""
    stat = Path(spec.model.ref).stat()
    text = _archive_json(spec.model.ref, stat.st_mtime_ns, stat.st_size, spec.model.imports,
                         str(spec.file))
    config: dict[str, Any] = json.loads(text)  # a fresh copy for each caller
    return config


@functools.lru_cache(maxsize=4)
def _archive_json(ref: str, mtime_ns: int, size: int, imports: tuple[str, ...],
                  file: str) -> str:
    import keras

    for module in imports:
        importlib.import_module(module)
    try:
        model = keras.saving.load_model(ref, compile=False, safe_mode=True)
    except Exception as exc:
        raise SpecError(f"the .keras archive cannot be loaded: {type(exc).__name__}: {exc}",
                        file=file, field="model.file", value=ref,
                        hint="what its preprocessing layers adapted is read from the archive; "
                             "list the modules of its custom objects under model.imports")\
            from exc
    return json.dumps(serialized(model), allow_nan=False)
