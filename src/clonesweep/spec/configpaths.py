"""Search-space keys that address a Keras model config, and how they resolve.

A key names one value to change; :func:`parse_key` checks its syntax and :func:`resolve`
finds every place it lands inside a model config (the envelope written by
``keras.saving.serialize_keras_object(model)``). Pure Python: no Keras, Ray or Optuna.

Accepted key forms::

    layers.<layer>.<key>[.<key>...]        one layer, by name, e.g. layers.hidden.units
    layers.<model>/<layer>.<key>...        a layer inside a nested model, by qualified path
    layers[<ClassName>].<key>...           every layer of that class, at any depth
    model.<argument>[.<key>...]            a constructor argument of a model whose config is
                                           its constructor arguments (a subclassed model, a
                                           keras-hub backbone), e.g. model.num_layers
    optimizer.<key>                        an optimizer setting, e.g. optimizer.learning_rate
    train.<key>                            a training setting, e.g. train.batch_size

Rules:

* ``<layer>`` is first read as a qualified path: layer names from the top model joined by
  ``/`` (Keras forbids ``/`` in layer names, so it cannot clash), e.g. ``encoder/dense``; a
  top-level layer's path is its name. If no layer has that path, a name without ``/``
  matches the layer of that name at any depth, and must be unique: when two nested models
  both hold a layer of that name the key is ambiguous and must be qualified. Layer names
  that contain ``.`` cannot be addressed by name: use a class selector or rename the layer.
* ``<ClassName>`` matches a layer's ``class_name`` or its ``registered_name``
  (``package>Name`` for custom layers).
* The ``<key>`` chain descends into the layer's ``config`` dict (a list element is addressed
  by its index). Every key must exist; a ``null`` value cannot be descended into (set the
  whole value instead). A class selector must resolve on every layer it matches.
* A layer's ``name`` cannot be swept.
* ``InputLayer`` entries and nested-model entries are indexed but cannot be targeted: input
  shapes come from the data, and a nested model is changed through its own layers.
* A model config is either a *layer graph* (Functional, Sequential: ``config.layers`` lists
  the layers) or its *constructor arguments* (``get_config()`` of a subclassed model or a
  keras-hub backbone: ``{"num_layers": 2, "hidden_dim": 16, ...}``, rebuilt through the
  class's ``from_config``). ``layers...`` keys address the first, ``model.<argument>`` keys
  the second; each kind refuses the other's keys, naming the model and listing its keys.
  (For a ``model.factory`` sweep, ``model.<argument>`` keys are the factory's arguments and
  never reach a config: the driver consumes them.)

(About 400 lines, over the usual 300: both kinds of model key are parsed, resolved and
refused here, so every error lists the keys the other kind would have taken.)
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from clonesweep.errors import ConfigPathError

__all__ = [
    "ACCEPTED_FORMS",
    "KIND_LAYER",
    "KIND_OPTIMIZER",
    "KIND_TRAIN",
    "MODEL_CLASSES",
    "ParsedKey",
    "PathKind",
    "Target",
    "argument_keys",
    "describe",
    "index_layers",
    "is_input_entry",
    "is_layer_graph",
    "is_model_entry",
    "layer_name",
    "model_kind",
    "parse_key",
    "resolve",
    "resolve_argument",
]


class PathKind(str, enum.Enum):
    """What a search-space key addresses."""

    LAYER = "layers"
    MODEL = "model"
    OPTIMIZER = "optimizer"
    TRAIN = "train"


KIND_LAYER = PathKind.LAYER
KIND_OPTIMIZER = PathKind.OPTIMIZER
KIND_TRAIN = PathKind.TRAIN

MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
ACCEPTED_FORMS = (
    "use layers.<layer>.<key>[.<key>...] (e.g. layers.hidden.units), "
    "layers.<model>/<layer>.<key> for a layer inside a nested model, "
    "layers[<ClassName>].<key> (e.g. layers[Dense].units), optimizer.<key> or train.<key> "
    "(model.<argument> for a model whose config is its constructor arguments)"
)

_SEGMENT = r"[^.\[\]\s]+"
_NAMED = re.compile(rf"^layers\.(?P<layer>{_SEGMENT})\.(?P<keys>{_SEGMENT}(?:\.{_SEGMENT})*)$")
_BY_CLASS = re.compile(
    rf"^layers\[(?P<cls>[A-Za-z_][\w>.]*)\]\.(?P<keys>{_SEGMENT}(?:\.{_SEGMENT})*)$"
)
_OTHER = re.compile(rf"^(?P<kind>optimizer|train|model)\.(?P<keys>{_SEGMENT}(?:\.{_SEGMENT})*)$")


@dataclass(frozen=True)
class ParsedKey:
    """A syntactically valid search-space key.

    Attributes:
        key: The key as written.
        kind: What it addresses.
        keys: The key chain after the selector (inside the layer's ``config`` for layer keys).
        layer_name: The layer name or qualified path (``layers.<name>`` keys), else None.
        class_name: The class selector (``layers[<Class>]`` keys), else None.
    """

    key: str
    kind: PathKind
    keys: tuple[str, ...]
    layer_name: str | None = None
    class_name: str | None = None

    @property
    def subkey(self) -> str:
        """The dotted chain after the selector, e.g. ``learning_rate`` for optimizer keys."""
        return ".".join(self.keys)


@dataclass(frozen=True)
class Target:
    """One place a layer key lands: ``keys`` inside the ``config`` of the layer at
    ``layer_path`` (layer names from the top model joined by ``/``)."""

    layer_path: str
    keys: tuple[str, ...]


def parse_key(key: str) -> ParsedKey:
    """Check the syntax of a search-space key; raise :class:`ConfigPathError` if malformed."""
    if not isinstance(key, str):
        raise ConfigPathError("a search-space key must be a string", field=str(key),
                              value=key, hint=ACCEPTED_FORMS)
    if m := _NAMED.match(key):
        layer = m["layer"]
        if layer.startswith("/") or layer.endswith("/") or "//" in layer:
            raise ConfigPathError(f"malformed qualified layer path '{layer}'", field=key,
                                  hint=ACCEPTED_FORMS)
        return ParsedKey(key, PathKind.LAYER, tuple(m["keys"].split(".")), layer_name=layer)
    if m := _BY_CLASS.match(key):
        return ParsedKey(key, PathKind.LAYER, tuple(m["keys"].split(".")), class_name=m["cls"])
    if m := _OTHER.match(key):
        return ParsedKey(key, PathKind(m["kind"]), tuple(m["keys"].split(".")))
    raise ConfigPathError("malformed search-space key", field=key, hint=ACCEPTED_FORMS)


def layer_name(entry: dict[str, Any]) -> str:
    """The name of a layer entry (Sequential entries carry it only inside ``config``)."""
    config = entry.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return str(name if name is not None else entry.get("name", ""))


def is_model_entry(entry: dict[str, Any]) -> bool:
    """True for a nested model: a model class, or any entry whose config lists layers."""
    config = entry.get("config")
    return entry.get("class_name") in MODEL_CLASSES or (
        isinstance(config, dict) and isinstance(config.get("layers"), list)
    )


def is_input_entry(entry: dict[str, Any]) -> bool:
    return entry.get("class_name") == "InputLayer"


def is_layer_graph(model_config: dict[str, Any]) -> bool:
    """Whether the config lists its layers (Functional, Sequential), as opposed to holding
    a model's constructor arguments. Accepts the envelope or a bare ``get_config()`` dict."""
    inner = model_config.get("config")
    return (isinstance(inner, dict) and isinstance(inner.get("layers"), list)) or \
        isinstance(model_config.get("layers"), list)


def model_kind(model_config: dict[str, Any]) -> str:
    """The model's class as its config names it, e.g. ``keras_hub>BertBackbone``."""
    return str(model_config.get("registered_name") or model_config.get("class_name") or "?")


def _layer_list(model_config: dict[str, Any]) -> list[Any]:
    inner = model_config.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("layers"), list):
        return inner["layers"]
    if isinstance(model_config.get("layers"), list):  # a bare get_config() dict
        return model_config["layers"]
    if isinstance(inner, dict) and "class_name" in model_config:
        keys = argument_keys(model_config)
        raise ConfigPathError(
            f"the model is a {model_kind(model_config)} whose config is its constructor "
            "arguments, not a list of layers, so layers.* keys cannot address it; its keys "
            f"are: {', '.join(keys) or '(none)'}", field="config.layers",
            hint="sweep its constructor arguments with model.<argument> keys, e.g. "
                 f"{keys[0] if keys else 'model.num_layers'}; a model built as a layer "
                 "graph (a keras-hub backbone) takes layers.* keys when a model.factory "
                 "returns it",
        )
    raise ConfigPathError(
        "the model config lists no layers", field="config.layers",
        hint="pass the envelope of keras.saving.serialize_keras_object(model) "
             "for a Functional or Sequential model",
    )


def index_layers(model_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Map each qualified layer path to its entry dict (the same object, not a copy).

    Recurses into nested models; the nested model's own entry is indexed before its layers.
    InputLayer entries are included. Accepts the ``serialize_keras_object`` envelope or a
    bare ``get_config()`` dict.
    """
    index: dict[str, dict[str, Any]] = {}
    for path, entry in _walk(_layer_list(model_config), ""):
        if path in index:
            raise ConfigPathError(f"two layers share the qualified path '{path}'",
                                  field="config.layers", hint="give every layer a unique name")
        index[path] = entry
    return index


def _walk(layers: list[Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for entry in layers:
        if not isinstance(entry, dict):
            continue
        path = prefix + layer_name(entry)
        yield path, entry
        if is_model_entry(entry):
            yield from _walk(entry["config"]["layers"], path + "/")


def resolve(model_config: dict[str, Any], key: str) -> tuple[Target, ...]:
    """Every :class:`Target` of the layer key ``key`` in ``model_config`` (never empty).

    Raises:
        ConfigPathError: the key is malformed, not a layer key, or matches nothing; the
            message lists what exists (layer names, classes, or the layer's config keys).
    """
    parsed = parse_key(key)
    if parsed.kind is not PathKind.LAYER:
        raise ConfigPathError(f"'{parsed.kind.value}.*' keys do not address the model config",
                              field=key, hint=ACCEPTED_FORMS)
    index = index_layers(model_config)
    paths = _select(index, parsed)
    for path in paths:
        _check_chain(index[path], path, parsed)
    return tuple(Target(path, parsed.keys) for path in paths)


def _select(index: dict[str, dict[str, Any]], parsed: ParsedKey) -> list[str]:
    if parsed.class_name is not None:
        return _select_class(index, parsed)
    name = str(parsed.layer_name)
    if name in index or "/" in name:
        paths = [name] if name in index else []
    else:
        paths = [p for p in index if p.rsplit("/", 1)[-1] == name]
    if not paths:
        options = list(index)
        close = difflib.get_close_matches(name, options + [p.rsplit("/", 1)[-1] for p in options])
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigPathError(f"no layer named '{name}'; the layers are: {', '.join(options)}",
                              field=parsed.key, hint=hint + ACCEPTED_FORMS)
    if len(paths) > 1:
        raise ConfigPathError(
            f"layer name '{name}' is ambiguous; it matches {', '.join(paths)}", field=parsed.key,
            hint=f"qualify it, e.g. layers.{paths[0]}.{parsed.subkey}",
        )
    _check_targetable(index[paths[0]], paths[0], parsed)
    return paths


def _select_class(index: dict[str, dict[str, Any]], parsed: ParsedKey) -> list[str]:
    cls = parsed.class_name
    paths = [p for p, e in index.items()
             if cls in (e.get("class_name"), e.get("registered_name"))]
    if not paths:
        present = sorted({str(e.get("class_name")) for e in index.values()})
        close = difflib.get_close_matches(str(cls), present)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigPathError(f"no layer of class '{cls}'; the classes present are: "
                              f"{', '.join(present)}", field=parsed.key, hint=hint + ACCEPTED_FORMS)
    for path in paths:
        _check_targetable(index[path], path, parsed)
    return paths


def _check_targetable(entry: dict[str, Any], path: str, parsed: ParsedKey) -> None:
    if is_input_entry(entry):
        raise ConfigPathError(f"'{path}' is an InputLayer; input shapes come from the data "
                              "and cannot be swept", field=parsed.key)
    if is_model_entry(entry):
        raise ConfigPathError(f"'{path}' is a nested model; address its layers instead",
                              field=parsed.key, hint=f"e.g. layers.{path}/<layer>.<key>")


def _check_chain(entry: dict[str, Any], path: str, parsed: ParsedKey) -> None:
    if parsed.keys[0] == "name":
        raise ConfigPathError("layer names cannot be swept: they are how layers are found "
                              "and connected", field=parsed.key)
    node: Any = entry.get("config")
    where = f"layer '{path}' config"
    for i, key in enumerate(parsed.keys):
        if node is None:
            raise ConfigPathError(
                f"{where} is null and cannot be descended into", field=parsed.key,
                hint=f"set the whole value (layers.{path}.{'.'.join(parsed.keys[:i])}) instead")
        if isinstance(node, list):
            if not (key.isdigit() and int(key) < len(node)):
                raise ConfigPathError(f"{where} is a list of {len(node)} items; '{key}' is "
                                      "not an index into it", field=parsed.key)
            node = node[int(key)]
        elif isinstance(node, dict):
            if key not in node:
                raise ConfigPathError(_missing_key_message(where, key, node), field=parsed.key,
                                      hint=_did_you_mean(key, node))
            node = node[key]
        else:
            raise ConfigPathError(f"{where} is a {type(node).__name__} value ({node!r}) and has "
                                  f"no key '{key}'", field=parsed.key)
        where = f"'{'.'.join(parsed.keys[: i + 1])}' of layer '{path}'"


def _missing_key_message(where: str, key: str, node: dict[str, Any]) -> str:
    return f"{where} has no key '{key}'; its keys are: {', '.join(sorted(node))}"


def _did_you_mean(key: str, node: dict[str, Any]) -> str | None:
    close = difflib.get_close_matches(key, [str(k) for k in node])
    return f"did you mean '{close[0]}'?" if close else None


def describe(model_config: dict[str, Any]) -> list[str]:
    """Every addressable leaf key, e.g. ``layers.hidden.units``, in traversal order
    (``model.<argument>`` keys for a constructor-argument config)."""
    if not is_layer_graph(model_config):
        return argument_keys(model_config)
    out: list[str] = []
    for path, entry in index_layers(model_config).items():
        if is_input_entry(entry) or is_model_entry(entry):
            continue
        out.extend(f"layers.{path}.{leaf}" for leaf in _leaves(entry.get("config"))
                   if leaf != "name")
    return out


# Constructor arguments every Keras model config carries that are no hyperparameter: the
# name identifies the model, trainable/dtype are set by training settings.
_NOT_ARGUMENTS = frozenset({"name", "trainable", "dtype"})


def argument_keys(model_config: dict[str, Any]) -> list[str]:
    """``model.<argument>`` for each constructor argument of a constructor-argument config."""
    inner = model_config.get("config")
    if not isinstance(inner, dict):
        return []
    return [f"model.{key}" for key in inner if key not in _NOT_ARGUMENTS]


def resolve_argument(model_config: dict[str, Any], key: str) -> tuple[str, ...]:
    """The key chain of a ``model.<argument>[.<key>...]`` key inside the envelope's
    ``config`` (the constructor arguments); checks that every key of the chain exists.

    Raises:
        ConfigPathError: the key is malformed or not a model key, the config is a layer
            graph, or the chain matches nothing (the message lists the arguments).
    """
    parsed = parse_key(key)
    if parsed.kind is not PathKind.MODEL:
        raise ConfigPathError(f"'{key}' is not a model.<argument> key", field=key,
                              hint=ACCEPTED_FORMS)
    if is_layer_graph(model_config):
        raise ConfigPathError(
            f"the model is a {model_kind(model_config)} layer graph; model.<argument> keys "
            "address a model whose config is its constructor arguments (or, with "
            "model.factory, the factory's arguments)", field=key,
            hint="address its layers instead, e.g. layers.<layer>.<key>")
    if parsed.keys[0] in _NOT_ARGUMENTS:
        raise ConfigPathError(f"'{parsed.keys[0]}' is no hyperparameter and cannot be swept",
                              field=key, hint=f"its keys are: "
                                              f"{', '.join(argument_keys(model_config))}")
    node: Any = model_config.get("config")
    where = f"the {model_kind(model_config)} config"
    for i, part in enumerate(parsed.keys):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            keys = argument_keys(model_config) if i == 0 else (
                [str(k) for k in node] if isinstance(node, dict) else [])
            raise ConfigPathError(
                f"{where} has no key '{part}'; its keys are: {', '.join(keys) or '(none)'}",
                field=key, hint=_did_you_mean(part, dict.fromkeys(
                    k.removeprefix("model.") for k in keys)))
        where = f"'{'.'.join(parsed.keys[: i + 1])}' of the {model_kind(model_config)} config"
    return parsed.keys


def _leaves(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif prefix:
        yield prefix[:-1]
