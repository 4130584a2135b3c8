"""Seeds derived from a root seed, stable across processes, machines and Python versions.

Every random thing in a trial gets its own seed: ``derive_seed(trial_seed, layer_path, slot)``
for each initializer and seeded layer, ``derive_seed(trial_seed, DATA_ORDER)`` for the data
order; ``derive_seed(trial_seed, layer_path, PYTHON_RANDOM)`` seeds Python's ``random`` before
a layer whose initializers are left unseeded is built (Keras draws an unseeded initializer's
seed from it). Built on blake2b of a canonical JSON string, never on ``hash()`` (salted per
process).
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["DATA_ORDER", "PYTHON_RANDOM", "SEED_LIMIT", "derive_seed"]

DATA_ORDER = "data"
PYTHON_RANDOM = "python_random"
# Seeds fall in [0, SEED_LIMIT): valid for numpy, TensorFlow, JAX and Keras alike.
SEED_LIMIT = 2**31 - 1
_PERSON = b"clonesweep.seed"


def derive_seed(root: int, *parts: str | int) -> int:
    """A seed in ``[0, 2**31 - 1)`` determined by ``root`` and ``parts`` alone.

    Args:
        root: The root seed (a trial's or an ensemble member's seed).
        *parts: Where the seed goes, e.g. ``("hidden", "kernel_initializer.config.seed")``.
            ``1`` and ``"1"`` are different parts.

    Returns:
        The derived seed; the same inputs give the same seed in every process.

    Example:
        >>> derive_seed(7, "hidden", "kernel_initializer.config.seed") == derive_seed(
        ...     7, "hidden", "kernel_initializer.config.seed")
        True
    """
    if isinstance(root, bool) or not isinstance(root, int):
        raise TypeError(f"the root seed must be an int, got {root!r}")
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, (int, str)):
            raise TypeError(f"seed parts must be int or str, got {part!r}")
    canonical = json.dumps([root, *parts], ensure_ascii=True, separators=(",", ":"))
    digest = hashlib.blake2b(canonical.encode("ascii"), digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "big") % SEED_LIMIT
