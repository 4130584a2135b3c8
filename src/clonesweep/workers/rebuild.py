"""Rebuild a seeded, mutated variant of a base model, in Keras safe mode.

The base model is deserialized (safe mode) from a fresh copy of its config (once per process
and config), then cloned with
``keras.models.clone_model(recursive=True)``. The clone function runs outside safe mode, so
it never calls ``layer.__class__.from_config``: it rebuilds each layer from its materialized
envelope through ``keras.saving.deserialize_keras_object(envelope, safe_mode=True)``.
``recursive=True`` makes the clone reach the layers of nested models; layer names are kept
from the configs, so qualified paths stay stable from one variant to the next. Operation
nodes (``x + 3.0``, ``ops.relu(h) * h`` on symbolic tensors: entries of the config's layer
list that are not in ``model.layers``) are rebuilt from their entries like layers.

Each layer is constructed and built right after Python's ``random`` is seeded with
``derive_seed(seed, layer_path, PYTHON_RANDOM)``: Keras draws the seed of every unseeded
initializer and seed generator from it, so a delegated layer's copies (see
:mod:`clonesweep.workers.materialize`) get distinct seeds that are the same in every process.
The caller's ``random`` state is restored afterwards.

A config that is a model's constructor arguments (a subclassed model registered with
``register_keras_serializable``, a keras-hub backbone or task) is rebuilt whole through its
class's ``from_config``, in safe mode, under Python's ``random`` seeded for the model. A
factory's model of that kind that is built as a layer graph (a keras-hub backbone) is swept
as that graph when the sweep has ``layers.*`` keys (:func:`graph_config`).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras

from clonesweep.errors import RebuildError, SpecError, UnsafeConfigError
from clonesweep.spec.configpaths import is_layer_graph, model_kind
from clonesweep.workers._keras import safe_mode_refused, unknown_classes
from clonesweep.workers.materialize import MODEL_SEED, Materialized, materialize
from clonesweep.workers.seeding import PYTHON_RANDOM, derive_seed

__all__ = ["Variant", "build_variant", "forget_bases", "graph_config", "rebuild"]

_REGISTER_HINT = (
    "decorate the class with @keras.saving.register_keras_serializable(package=...) and "
    "list its module under model.imports in the sweep file so every worker imports it"
)


@dataclass
class Variant:
    """A rebuilt model and the materialized config it was built from."""

    model: keras.Model
    materialized: Materialized


def rebuild(base_config: dict[str, Any], params: Mapping[str, Any], *, seed: int) -> Variant:
    """Materialize ``params`` and ``seed`` onto ``base_config`` and build the variant.

    ``base_config`` is never mutated and can be reused for every trial.

    Raises:
        ConfigPathError: a param key matches nothing in the config.
        UnsafeConfigError: a Lambda layer, or a param value that is a path or URL.
        RebuildError: Keras could not rebuild the base model or a layer (unknown class,
            incompatible shapes, bad values).
    """
    materialized = materialize(base_config, params, seed)
    state = random.getstate()
    try:
        if not is_layer_graph(base_config):
            return Variant(model=_from_arguments(materialized), materialized=materialized)
        base, paths = _base_model(base_config)
        clone_function = _make_clone_function(paths, materialized.layer_configs, seed)
        try:
            model = keras.models.clone_model(base, clone_function=clone_function,
                                             recursive=True)
        except (TypeError, ValueError, KeyError) as exc:
            raise _rebuild_error(exc, "the variant") from exc
    finally:
        random.setstate(state)
    return Variant(model=model, materialized=materialized)


def _from_arguments(materialized: Materialized) -> keras.Model:
    """A constructor-argument model, built through its class's ``from_config`` (safe mode)."""
    config = materialized.config
    random.seed(materialized.seeds[MODEL_SEED])
    model = _deserialize(copy.deepcopy(config), f"the {model_kind(config)} model")
    if not isinstance(model, keras.Model):
        raise RebuildError(f"the config of {model_kind(config)} builds a "
                           f"{type(model).__name__}, not a keras.Model")
    return model


def graph_config(model: keras.Model) -> dict[str, Any] | None:
    """The layer graph of a model whose own config is its constructor arguments but which
    is built as a layer graph (a Functional subclass: a keras-hub backbone), as the envelope
    of a plain Functional model over the same layers, so that ``layers.<name>.<field>``
    keys address them; None when the model has no layer graph (a subclassed ``call``).

    Public way: ``clone_model`` with a clone function that keeps each layer gives a plain
    Functional over the same graph (its class, and with it the constructor-argument config
    and methods such as a backbone's ``token_embedding``, is not kept).
    """
    try:
        plain = keras.models.clone_model(model, clone_function=lambda layer: layer)
        config: dict[str, Any] = json.loads(json.dumps(
            keras.saving.serialize_keras_object(plain), allow_nan=False))
    except Exception:  # not a layer graph Keras can clone: the caller keeps the arguments
        return None
    return config if is_layer_graph(config) else None


def build_variant(
    model_or_config: keras.Model | dict[str, Any] | str,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int,
) -> keras.Model:
    """Build a new model from a base model with changed hyperparameters and derived seeds.

    Every initializer and seeded layer gets its own seed derived from ``seed`` and the
    layer's path, so the same ``seed`` gives bitwise-identical initial weights and another
    ``seed`` gives different ones. ``optimizer.*`` and ``train.*`` params are validated
    but do not change the model (use :func:`rebuild` to read them back).

    Args:
        model_or_config: A model, its ``keras.saving.serialize_keras_object`` envelope,
            or that envelope as JSON text: a Functional or Sequential model, or a model
            whose config is its constructor arguments (a registered subclassed model, a
            keras-hub backbone or task).
        params: Search-space keys to values, e.g. ``{"layers.hidden.units": 64,
            "layers[Dropout].rate": 0.2}``, or ``{"model.num_layers": 4}`` for a
            constructor-argument model. None changes nothing but the seeds.
        seed: The root seed of this variant.

    Returns:
        A new, uncompiled model with fresh weights.

    Raises:
        SpecError: ``model_or_config`` is not a model, an envelope dict or JSON of one;
            a key matches nothing (:class:`~clonesweep.errors.ConfigPathError`).
        UnsafeConfigError: a Lambda layer, or a value that is a file path or URL.
        RebuildError: Keras could not rebuild it (for example an unregistered custom layer).

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="hidden"),
        ...                           keras.layers.Dense(1, name="out")])
        >>> wider = build_variant(model, {"layers.hidden.units": 32}, seed=7)
        >>> wider.get_layer("hidden").units
        32
    """
    return rebuild(_as_config(model_or_config), params or {}, seed=seed).model


def _as_config(model_or_config: keras.Model | dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(model_or_config, keras.Model):
        config: Any = keras.saving.serialize_keras_object(model_or_config)
    elif isinstance(model_or_config, str):
        try:
            config = json.loads(model_or_config)
        except json.JSONDecodeError as exc:
            raise SpecError(f"the model config is not valid JSON: {exc}") from exc
    else:
        config = model_or_config
    if not isinstance(config, dict) or "class_name" not in config:
        raise SpecError(
            "expected a keras.Model, a serialize_keras_object envelope or its JSON text",
            value=model_or_config,
            hint="pass keras.saving.serialize_keras_object(model)",
        )
    return config


# Base models deserialized in this process, by their config's JSON text: cloning reads a base
# model's structure and never changes it, and building one (every layer's weights
# initialized) cost about as much as the clone itself (~30 ms of a ~60 ms digits-MLP
# rebuild). Kept few: a sweep has one base, a structural search a handful.
_BASES: dict[str, tuple[Any, dict[int, str]]] = {}
_BASES_KEPT = 8


def forget_bases() -> None:
    """Drop the base models kept in this process (a large model holds its weights)."""
    _BASES.clear()


def _base_model(base_config: dict[str, Any]) -> tuple[Any, dict[int, str]]:
    """The deserialized base model and its layers' paths (cached, see ``_BASES``)."""
    key = json.dumps(base_config, sort_keys=True, default=str)
    hit = _BASES.get(key)
    if hit is not None:
        return hit
    state = random.getstate()
    try:
        base = _deserialize(copy.deepcopy(base_config), "the base model")
    finally:
        random.setstate(state)
    if not isinstance(base, (keras.Sequential, keras.Model)) or not hasattr(base, "layers"):
        raise RebuildError(f"the base config builds a {type(base).__name__}, not a model")
    if len(_BASES) >= _BASES_KEPT:
        _BASES.pop(next(iter(_BASES)))
    _BASES[key] = (base, _layer_paths(base, ""))
    return _BASES[key]


def _layer_paths(model: keras.Model, prefix: str) -> dict[int, str]:
    """``id(layer) -> qualified path`` for every layer and operation node, recursing into
    nested models (a Functional's ``operations`` holds both; a Sequential has layers only)."""
    paths: dict[int, str] = {}
    for layer in getattr(model, "operations", None) or model.layers:
        path = prefix + layer.name
        paths.setdefault(id(layer), path)
        if isinstance(layer, keras.Model) and hasattr(layer, "layers"):
            for key, value in _layer_paths(layer, path + "/").items():
                paths.setdefault(key, value)
    return paths


def _make_clone_function(
    paths: Mapping[int, str], layer_configs: Mapping[str, dict[str, Any]], seed: int
) -> Callable[[keras.layers.Layer], keras.layers.Layer]:
    def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
        # clone_model hands over the ORIGINAL layers of the base model.
        path = paths.get(id(layer))
        if path is None or path not in layer_configs:
            raise RebuildError(f"layer '{layer.name}' of the base model is not in its config")
        envelope = copy.deepcopy(layer_configs[path])
        for key in ("name", "inbound_nodes", "build_config"):
            envelope.pop(key, None)
        # clone_model builds this layer (calls it) before it asks for the next one, so the
        # initializer copies it makes while building draw from this seed too.
        random.seed(derive_seed(seed, path, PYTHON_RANDOM))
        return _deserialize(envelope, f"layer '{path}'")

    return clone_function


def _deserialize(envelope: dict[str, Any], what: str) -> keras.layers.Layer:
    try:
        return keras.saving.deserialize_keras_object(envelope, safe_mode=True)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise _rebuild_error(exc, what) from exc


def _rebuild_error(exc: Exception, what: str) -> RebuildError:
    text = str(exc)
    if safe_mode_refused(exc):
        return UnsafeConfigError(f"safe mode refused to rebuild {what}: {text}")
    missing = unknown_classes(exc)
    if missing:
        return RebuildError(
            f"could not rebuild {what}: Keras does not know the class "
            f"{', '.join(repr(m) for m in missing)} (it is not registered in this process)"
            f"\n  hint: {_REGISTER_HINT}"
        )
    return RebuildError(f"could not rebuild {what}: {type(exc).__name__}: {text}")
