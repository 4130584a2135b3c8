"""The three seed properties of a rebuilt model, checked on real Keras weights.

1. the same trial seed gives bitwise-identical weights (rebuilt again after
   ``clear_session``);
2. another trial seed changes every random weight;
3. within one model no two random weights are equal unless plain Keras makes them equal
   (the same pair is equal in the model Keras built itself, with its own unseeded draws).

A weight is *random* when its values are not all equal: constant initializers (zeros, ones)
give constant tensors, random ones never do at these sizes. Weights are compared through
digests of their bytes, so large models are not held twice in memory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from clonesweep.workers.rebuild import forget_bases, rebuild


def digests(model: Any) -> dict[str, tuple[str, bool]]:
    """``position:path -> (digest of the bytes, random?)`` for every variable, in order
    (paths of seed-generator states carry process-wide counters, the position does not)."""
    out = {}
    for i, variable in enumerate(model.variables):
        value = np.asarray(variable)
        flat = value.reshape(-1)
        random = flat.size > 1 and not bool(np.all(flat == flat[0]))
        digest = hashlib.blake2b(value.tobytes(), digest_size=16).hexdigest()
        out[f"{i}:{variable.path}"] = (digest, random)
    return out


def equal_pairs(weights: dict[str, tuple[str, bool]]) -> set[frozenset[str]]:
    """Pairs of random weights with the same bytes, by path (seed-generator counters cut)."""
    groups: dict[str, list[str]] = {}
    for key, (digest, random) in weights.items():
        if random:
            path = re.sub(r"seed_generator_\d+", "seed_generator", key.split(":", 1)[1])
            groups.setdefault(digest, []).append(path)
    return {frozenset((a, b)) for keys in groups.values() for a in keys for b in keys if a < b}


def check_seed_properties(config: dict[str, Any], plain: Any, params: dict[str, Any] | None = None,
                          *, seeds: tuple[int, int] = (11, 12),
                          after: Callable[[Any], None] | None = None) -> int:
    """Assert the three properties for ``config`` (``plain``: the model Keras built); returns
    the number of random weights checked. ``after`` is called with the first variant."""
    plain_pairs = equal_pairs(digests(plain))
    first_model = rebuild(config, params or {}, seed=seeds[0]).model
    if after is not None:
        after(first_model)
    first = digests(first_model)
    del first_model
    keras.utils.clear_session()
    again = digests(rebuild(config, params or {}, seed=seeds[0]).model)
    keras.utils.clear_session()
    other = digests(rebuild(config, params or {}, seed=seeds[1]).model)
    keras.utils.clear_session()
    forget_bases()
    assert len(first) == len(again) == len(other)
    randoms = 0
    for (key, (digest, random)), (_, (same, _)), (_, (changed, _)) in zip(
            first.items(), again.items(), other.items(), strict=True):
        assert digest == same, f"{key}: the same seed gave other weights"
        if random:
            randoms += 1
            assert digest != changed, f"{key}: another seed left this random weight unchanged"
    extra = equal_pairs(first) - plain_pairs
    assert not extra, "equal random weights plain Keras draws apart: " + ", ".join(
        " == ".join(sorted(pair)) for pair in extra)
    assert randoms > 0
    return randoms
