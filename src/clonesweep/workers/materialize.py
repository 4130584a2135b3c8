"""Turn a base model config, a trial's params and its seed into the exact config to build.

Pure Python (no Keras): the result is plain data that can be hashed, stored on the trial and
rebuilt anywhere. What :func:`materialize` does, in order:

1. validates every param value (JSON primitives or lists of them; no file paths or URLs);
2. applies each ``layers...`` param at every :class:`~clonesweep.spec.configpaths.Target` of
   a deep copy of the base config (class selectors first, then named layers, each group in
   key order, so a named layer's value wins over its class's);
3. turns string initializers of a random kind (``"he_normal"``) into envelopes, and gives
   random initializer envelopes without a ``seed`` key one, so that every seed can be set;
4. refuses Lambda layers anywhere in the result;
5. sets every ``seed`` key inside every layer's config to
   ``derive_seed(seed, layer_path, "<dotted chain to the seed>")``, except in layers that
   copy one config seed into several weights (see ``delegated``), and derives the
   data-order seed;
6. drops each layer entry's ``build_config``: it freezes the input shape a layer saw in the
   base model, which a param upstream (``units``) may change; layers build when called.

Where the seeds go (every seed slot, or Python's ``random`` for layers that copy one
initializer config into several weights) is :mod:`clonesweep.workers.seedslots`.

A config that is a model's constructor arguments (a subclassed model, a keras-hub backbone:
no layer list) takes ``model.<argument>`` params at its own keys and is built whole, under
Python's ``random`` seeded with ``derive_seed(seed, "model", PYTHON_RANDOM)``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clonesweep.errors import SpecError, UnsafeConfigError
from clonesweep.spec.configpaths import (
    ParsedKey,
    PathKind,
    index_layers,
    is_layer_graph,
    parse_key,
    resolve,
    resolve_argument,
)
from clonesweep.workers.seeding import DATA_ORDER, PYTHON_RANDOM, derive_seed
from clonesweep.workers.seedslots import (
    dicts,
    normalize_initializers,
    seed_layers,
)

__all__ = ["MODEL_SEED", "Materialized", "canonical_hash", "materialize"]

#: Where a constructor-argument model's Python-random seed is recorded in ``seeds``.
MODEL_SEED = f"model/{PYTHON_RANDOM}"
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}$")


@dataclass(frozen=True)
class Materialized:
    """One variant's config, ready to rebuild.

    Attributes:
        config: The full model envelope: base config deep-copied, params applied, every
            seed set, layer ``build_config`` entries dropped.
        config_hash: sha256 hex of ``config`` as canonical JSON (see :func:`canonical_hash`).
        seeds: Where each seed went, e.g. ``"hidden/kernel_initializer" -> 123``,
            ``"drop/seed" -> 456``, ``"mha/python_random" -> 789`` (a delegated layer),
            ``"model/python_random"`` (a constructor-argument model), plus ``"data"`` ->
            the data-order seed.
        layer_configs: Qualified layer path -> materialized layer envelope (a copy); empty
            for a constructor-argument model.
        optimizer: Values of ``optimizer.*`` params, keyed by the key after ``optimizer.``.
        train: Values of ``train.*`` params, keyed by the key after ``train.``.
    """

    config: dict[str, Any]
    config_hash: str
    seeds: dict[str, int]
    layer_configs: dict[str, dict[str, Any]]
    optimizer: dict[str, Any]
    train: dict[str, Any]


def materialize(base_config: dict[str, Any], params: Mapping[str, Any], seed: int) -> Materialized:
    """Apply ``params`` and derived seeds to a copy of ``base_config``; never mutates it.

    Raises:
        ConfigPathError: a key is malformed or matches nothing in the config.
        SpecError: a value is not a JSON primitive or a list of them.
        UnsafeConfigError: a value looks like a file path or URL, or the config holds a
            Lambda layer.
    """
    layer_params, model_params, optimizer, train = _split_params(params)
    config = copy.deepcopy(base_config)
    if not is_layer_graph(config):
        return _materialize_arguments(config, layer_params, model_params, optimizer, train,
                                      seed)
    if model_params:
        resolve_argument(config, model_params[0][0].key)  # raises: names the model kind
    for parsed, value in layer_params:
        targets = resolve(config, parsed.key)
        index = index_layers(config)
        for target in targets:
            _assign(index[target.layer_path]["config"], target.keys, value)
    index = index_layers(config)
    normalize_initializers(index)
    _refuse_lambda(config)
    seeds = seed_layers(index, seed)
    seeds[DATA_ORDER] = derive_seed(seed, DATA_ORDER)
    for entry in index.values():
        entry.pop("build_config", None)
    return Materialized(
        config=config,
        config_hash=canonical_hash(config),
        seeds=seeds,
        layer_configs={path: copy.deepcopy(entry) for path, entry in index.items()},
        optimizer=optimizer,
        train=train,
    )


def _materialize_arguments(
    config: dict[str, Any], layer_params: list[tuple[ParsedKey, Any]],
    model_params: list[tuple[ParsedKey, Any]], optimizer: dict[str, Any],
    train: dict[str, Any], seed: int,
) -> Materialized:
    """A constructor-argument config: ``model.*`` params land on its own keys."""
    if layer_params:
        resolve(config, layer_params[0][0].key)  # raises: names the kind, lists its keys
    for parsed, value in model_params:
        _assign(config["config"], resolve_argument(config, parsed.key), value)
    _refuse_lambda(config)
    # Compiling is the worker's job, from the sweep file's training settings.
    config.pop("compile_config", None)
    # build_config stays: a subclassed model built at load creates its weights under the
    # seeded Python random, not later at its first call.
    seeds = {MODEL_SEED: derive_seed(seed, "model", PYTHON_RANDOM),
             DATA_ORDER: derive_seed(seed, DATA_ORDER)}
    return Materialized(config=config, config_hash=canonical_hash(config), seeds=seeds,
                        layer_configs={}, optimizer=optimizer, train=train)


def canonical_hash(config: Mapping[str, Any]) -> str:
    """sha256 hex of ``json.dumps(config, sort_keys=True, separators=(",", ":"))``."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _split_params(
    params: Mapping[str, Any],
) -> tuple[list[tuple[ParsedKey, Any]], list[tuple[ParsedKey, Any]], dict[str, Any],
           dict[str, Any]]:
    layer_params: list[tuple[ParsedKey, Any]] = []
    model_params: list[tuple[ParsedKey, Any]] = []
    optimizer: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for key, raw in params.items():
        parsed = parse_key(key)
        value = _check_value(key, raw)
        if parsed.kind is PathKind.LAYER:
            layer_params.append((parsed, value))
        elif parsed.kind is PathKind.MODEL:
            model_params.append((parsed, value))
        else:
            (optimizer if parsed.kind is PathKind.OPTIMIZER else train)[parsed.subkey] = value
    # Class selectors first, then named layers: the more specific key wins.
    layer_params.sort(key=lambda item: (item[0].class_name is None, item[0].key))
    return layer_params, model_params, optimizer, train


def _check_value(key: str, value: Any, depth: int = 0) -> Any:
    if isinstance(value, (list, tuple)) and depth < 2:
        return [_check_value(key, item, depth + 1) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError("param values must be finite numbers", field=key, value=value)
    if isinstance(value, str):
        _refuse_path_like(key, value)
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise SpecError(
        f"param values must be JSON primitives or lists of them, not {type(value).__name__}",
        field=key, value=value, hint="use null, true/false, a number, a string or a list",
    )


def _refuse_path_like(key: str, value: str) -> None:
    looks_like_path = (
        "://" in value
        or value.startswith(("/", "./", "../", "~", "\\"))
        or (("/" in value or "\\" in value) and _EXTENSION.search(value) is not None)
    )
    if looks_like_path:
        raise UnsafeConfigError(
            f"param '{key}' has a value that looks like a file path or URL ({value!r}); "
            "a rebuilt model must not read files or fetch URLs, so such values are refused"
        )


def _assign(config: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node: Any = config
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = copy.deepcopy(value)
    else:
        node[last] = copy.deepcopy(value)


def _refuse_lambda(config: dict[str, Any]) -> None:
    for node in dicts(config):
        if node.get("class_name") == "Lambda":
            inner = node.get("config")
            name = inner.get("name") if isinstance(inner, dict) else None
            raise UnsafeConfigError(
                f"the model holds a Lambda layer ('{name}'): Lambda layers carry Python "
                "code that safe mode refuses to load; replace it with a custom layer class "
                "registered with keras.saving.register_keras_serializable"
            )
