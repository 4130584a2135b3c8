"""The Parzen estimators' log-density (study/parzen.py) against Optuna's own, to rounding.

Optuna's estimator is built from the same observations and read back through the fence
(``_optuna._mixture``); both score the same candidates. Stated tolerance: 1e-12 relative
(the two differ in the order of the sums and in the error function's implementation: near
a mass of 1 Optuna's loses the last digits, 1e-15 absolute in the log).
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from clonesweep.orchestrator import _optuna
from clonesweep.orchestrator.study import parzen

D = optuna.distributions
SPACE = {
    "units": D.IntDistribution(16, 256, log=True),
    "rate": D.FloatDistribution(0.0, 0.5),
    "lr": D.FloatDistribution(1e-4, 1e-1, log=True),
    "wd": D.FloatDistribution(0.0, 0.01, step=0.001),
    "act": D.CategoricalDistribution(["relu", "tanh", "gelu"]),
    "k": D.IntDistribution(1, 9, step=2),
}


def _estimator(space: dict[str, D.BaseDistribution], n: int, seed: int) -> object:
    from optuna.samplers._tpe.parzen_estimator import (
        _ParzenEstimator,
        _ParzenEstimatorParameters,
    )
    from optuna.samplers._tpe.sampler import default_weights

    rng = np.random.RandomState(seed)
    values = {"units": rng.randint(16, 257, n).astype(float), "rate": rng.uniform(0, .5, n),
              "lr": 10 ** rng.uniform(-4, -1, n), "wd": rng.randint(0, 11, n) * 0.001,
              "act": rng.randint(0, 3, n).astype(float),
              "k": rng.choice([1, 3, 5, 7, 9], n).astype(float)}
    params = _ParzenEstimatorParameters(1.0, True, False, default_weights, True)
    return _ParzenEstimator({k: values[k] for k in space}, space, params)


@pytest.mark.parametrize("n", [0, 1, 3, 30, 600])
@pytest.mark.parametrize("keys", [["rate"], ["lr"], ["units"], ["wd"], ["act"], ["k"],
                                  list(SPACE)], ids=lambda k: "+".join(k))
def test_log_pdf_equals_optunas(n: int, keys: list[str]) -> None:
    space = {k: SPACE[k] for k in keys}
    estimator = _estimator(space, n, seed=n)
    rng = np.random.RandomState(1)
    with _optuna.fast_tpe_math():
        samples = estimator.sample(rng, 24)  # type: ignore[attr-defined]
        theirs = estimator.log_pdf(samples)  # type: ignore[attr-defined]
    mixture = _optuna._mixture(estimator)
    assert mixture is not None
    ours = parzen.log_pdf(estimator._transform(samples), *mixture)  # type: ignore[attr-defined]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_log_pdf_outside_the_bounds_is_minus_infinity() -> None:
    space = {"rate": SPACE["rate"], "lr": SPACE["lr"]}
    estimator = _estimator(space, 50, seed=0)
    x = np.array([[0.25, 1e-3], [-0.1, 1e-3], [0.25, 0.5], [0.0, 1e-4], [0.5, 1e-1]])
    mixture = _optuna._mixture(estimator)
    assert mixture is not None
    got = parzen.log_pdf(x, *mixture)
    theirs = estimator.log_pdf({"rate": x[:, 0], "lr": x[:, 1]})  # type: ignore[attr-defined]
    assert np.isneginf(got[1]) and np.isneginf(got[2])
    np.testing.assert_allclose(got, theirs, rtol=1e-12)


def test_log_gauss_mass_equals_optunas_in_every_case() -> None:
    from optuna.samplers._tpe import _truncnorm

    edges = np.array([-40.0, -8.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 8.0, 40.0])
    a, b = np.meshgrid(edges, edges)
    a, b = a[a < b], b[a < b]  # left of 0, right of 0, across 0, in the far tails
    with _optuna.fast_tpe_math():
        theirs = _truncnorm._log_gauss_mass(a, b)
    # A mass within 1e-15 of 1 (a log near 0): Optuna's own error function loses those last
    # digits (scipy's ndtr keeps them), so that case is compared absolutely.
    np.testing.assert_allclose(parzen.log_gauss_mass(a, b), theirs, rtol=1e-12, atol=1e-15)
