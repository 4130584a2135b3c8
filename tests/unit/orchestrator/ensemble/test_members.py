"""Member seeds: independent across members, reproducible from the ensemble seed."""

from __future__ import annotations

import json

import numpy as np

from clonesweep.orchestrator.ensemble.run import member_seed
from clonesweep.workers.rebuild import rebuild
from tests_support import CONFIGS

BASE = json.loads((CONFIGS / "digits_mlp.json").read_text())


def initial_weights(seed: int) -> tuple[dict[str, list[np.ndarray]], dict[str, int]]:
    variant = rebuild(BASE, {"layers.hidden.units": 16}, seed=seed)
    weights = {layer.name: [w.numpy() for w in layer.weights]
               for layer in variant.model.layers if layer.weights}
    return weights, variant.materialized.seeds


def test_members_differ_on_every_layer_and_every_seed() -> None:
    seeds = [member_seed(0, i) for i in range(3)]
    assert len(set(seeds)) == 3
    built = [initial_weights(s) for s in seeds]
    for (wa, sa), (wb, sb) in ((built[0], built[1]), (built[0], built[2]), (built[1], built[2])):
        assert set(wa) == {"hidden", "out"}
        for name in wa:  # every kernel differs (biases start at zero by design)
            assert not np.array_equal(wa[name][0], wb[name][0]), name
        # every initializer, the Dropout and the data order got their own seed
        assert set(sa) == set(sb) and {"hidden/kernel_initializer", "drop/seed", "data"} <= set(sa)
        assert all(sa[k] != sb[k] for k in sa)


def test_same_ensemble_seed_gives_identical_members() -> None:
    for i in range(2):
        (wa, sa), (wb, sb) = initial_weights(member_seed(7, i)), initial_weights(member_seed(7, i))
        assert sa == sb
        for name in wa:
            for a, b in zip(wa[name], wb[name], strict=True):
                assert np.array_equal(a, b)
    assert member_seed(7, 0) != member_seed(8, 0)
