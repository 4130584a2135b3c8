"""Where a trial's seeds go in a materialized layer-graph config (for
:func:`clonesweep.workers.materialize.materialize`).

Every ``seed`` key inside a layer's config (its initializers', a Dropout's...) gets
``derive_seed(seed, layer_path, "<dotted chain to the seed>")``, after
:func:`normalize_initializers` gave every random initializer a ``seed`` key to set.

Seeds per weight, not per layer config: MultiHeadAttention and GroupedQueryAttention copy
their one kernel initializer config into the query, key and value sub-layers at build time,
and keras-hub's transformer layers clone theirs per sub-layer (Bidirectional is fine: its
config holds the backward layer's own config, seeded apart). One seed in such a config
makes the copies' weights bitwise equal. These layers are *delegated*: their seed slots are
left ``null``, so each initializer copy Keras makes draws its own seed from Python's
``random`` module, which :mod:`clonesweep.workers.rebuild` seeds with
``derive_seed(seed, layer_path, PYTHON_RANDOM)`` right before it builds the layer (recorded
as ``"<layer>/python_random"``). That is what plain Keras does with unseeded initializers,
made deterministic per layer path. A user's custom layer keeps explicit seeds in its config
(the config then records them); one that copies an initializer config into several weights
gets equal copies, unless its config lists no initializer: its unseeded initializers then
draw from the seeded Python ``random`` like any delegated layer's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from clonesweep.spec.configpaths import is_input_entry, is_model_entry
from clonesweep.workers.seeding import PYTHON_RANDOM, derive_seed

__all__ = ["COPYING_LAYERS", "DELEGATED_PACKAGES", "RANDOM_INITIALIZERS", "dicts",
           "normalize_initializers", "seed_layers"]

# Keras initializers that draw random numbers and take a ``seed``.
RANDOM_INITIALIZERS = frozenset({
    "RandomNormal", "RandomUniform", "TruncatedNormal", "VarianceScaling", "GlorotNormal",
    "GlorotUniform", "HeNormal", "HeUniform", "LecunNormal", "LecunUniform", "Orthogonal",
    "OrthogonalInitializer",
})
#: Keras layers that copy one initializer (or layer) config into several weights.
#: (Bidirectional needs none: its config holds the backward layer's own config and seeds.)
COPYING_LAYERS = frozenset({"MultiHeadAttention", "GroupedQueryAttention", "GroupQueryAttention"})
#: Libraries whose layers copy initializer configs into sub-layers (by module).
DELEGATED_PACKAGES = frozenset({"keras_hub", "keras_nlp", "keras_cv"})


def normalize_initializers(index: dict[str, dict[str, Any]]) -> None:
    for _, entry in _seedable(index):
        for node in dicts(entry.get("config")):
            for key, value in node.items():
                if key.endswith("_initializer") and isinstance(value, str):
                    name = "".join(part.capitalize() for part in value.split("_"))
                    if name in RANDOM_INITIALIZERS or value in RANDOM_INITIALIZERS:
                        node[key] = {"module": "keras.initializers",
                                     "class_name": value if value[:1].isupper() else name,
                                     "config": {"seed": None}, "registered_name": None}
            inner = node.get("config")
            if node.get("class_name") in RANDOM_INITIALIZERS and isinstance(inner, dict):
                inner.setdefault("seed", None)


def seed_layers(index: dict[str, dict[str, Any]], seed: int) -> dict[str, int]:
    seeds: dict[str, int] = {}
    delegated = _delegated(index)
    for path, entry in _seedable(index):
        if path in delegated:
            for holder, chain in _seed_slots(entry.get("config"), ()):
                holder[chain[-1]] = None
            seeds[f"{path}/{PYTHON_RANDOM}"] = derive_seed(seed, path, PYTHON_RANDOM)
            continue
        for holder, chain in _seed_slots(entry.get("config"), ()):
            value = derive_seed(seed, path, ".".join(chain))
            holder[chain[-1]] = value
            # "hidden/kernel_initializer" for an initializer's seed, else the full chain.
            is_init = len(chain) > 2 and chain[-2] == "config" and chain[-3].endswith("initializer")
            label = chain[:-2] if is_init else chain
            seeds[f"{path}/{'.'.join(label)}"] = value
    return seeds


def _delegated(index: dict[str, dict[str, Any]]) -> set[str]:
    """Layers whose weights take their seeds from Python's ``random`` at build time: Keras
    layers that copy one config seed into several weights, and layers of the libraries
    whose layers do (keras-hub's transformer layers clone their initializers per sub-layer).
    A user's custom layer keeps explicit seeds: the config then records them."""
    out = set()
    for path, entry in _seedable(index):
        package = str(entry.get("module") or "").split(".")[0]
        if entry.get("class_name") in COPYING_LAYERS or package in DELEGATED_PACKAGES:
            out.add(path)
    return out


def _seedable(index: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    # Nested-model entries are skipped: their layers are indexed and seeded on their own.
    for path, entry in index.items():
        if not (is_model_entry(entry) or is_input_entry(entry)):
            yield path, entry


def _seed_slots(
    node: Any, chain: tuple[str, ...]
) -> Iterator[tuple[dict[str, Any], tuple[str, ...]]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "seed" and (value is None or type(value) is int):
                yield node, (*chain, key)
            else:
                yield from _seed_slots(value, (*chain, str(key)))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _seed_slots(item, (*chain, str(i)))


def dicts(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in list(node.values()):
            yield from dicts(value)
    elif isinstance(node, list):
        for item in node:
            yield from dicts(item)
