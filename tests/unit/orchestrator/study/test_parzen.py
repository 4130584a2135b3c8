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


# The log-density written plainly, each matrix a fresh array (what log_pdf computed before
# its work buffers, its floor under the log-sum-exp's terms, its per-candidate bounds test
# and its mirrored tails): none of them may change a bit. The random cases below hold terms
# far under the floor (kernels 0.05 wide, 1 away), candidates outside the bounds and kernels
# of no width.
def _fresh(x: np.ndarray, weights: np.ndarray, kernels: list[parzen.Kernels]) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        per_kernel = np.log(weights)
        per_pair = np.zeros((len(x), len(weights)))
        for j, k in enumerate(kernels):
            if k.choices is not None:
                per_pair += np.log(k.choices)[:, x[:, j].astype(np.int64)].T
                continue
            per_kernel -= parzen.log_gauss_mass((k.low - k.mu) / k.sigma,
                                                (k.high - k.mu) / k.sigma)
            v = np.log(x[:, j]) if k.log else x[:, j]
            if k.step == 0.0:
                z = (v[:, None] - k.mu) / k.sigma
                a, b = (k.low - k.mu) / k.sigma, (k.high - k.mu) / k.sigma
                term = -0.5 * np.square(z)
                term[(z < a) | (z > b)] = -np.inf
                term[:, a == b] = np.nan
                per_kernel -= parzen._LOG_SQRT_2PI + np.log(k.sigma)
            else:
                left, right = x[:, j] - k.step / 2, x[:, j] + k.step / 2
                if k.log:
                    left, right = np.log(left), np.log(right)
                term = parzen.log_gauss_mass((left[:, None] - k.mu) / k.sigma,
                                             (right[:, None] - k.mu) / k.sigma)
            per_pair += term
        per_pair += per_kernel
        top = per_pair.max(axis=1)
        top[np.isneginf(top)] = 0
        return np.log(np.exp(per_pair - top[:, None]).sum(axis=1)) + top


def _random_case(rng: np.random.Generator, n: int, m: int) -> tuple[np.ndarray, np.ndarray,
                                                                    list[parzen.Kernels]]:
    cols, kernels = [], []
    for kind in rng.permutation(["plain", "log", "step", "choice"])[:rng.integers(1, 5)]:
        if kind == "choice":
            kernels.append(parzen.Kernels(choices=rng.dirichlet(np.ones(3), n)))
            cols.append(rng.integers(0, 3, m).astype(float))
            continue
        low, high = sorted(rng.uniform(-3, 3, 2))
        step = 0.5 if kind == "step" else 0.0
        if kind == "step":
            low = float(np.floor(low)) - 0.25
            high = low + 0.5 * int(rng.integers(1, 9))
        sigma = rng.uniform(0.05, 2, n)
        sigma[rng.integers(0, n)] = rng.choice([sigma[0], 0.0])  # a kernel of no width
        if kind == "log":
            x = np.exp(rng.uniform(low - 0.2, high + 0.2, m))  # some outside the bounds
        elif kind == "step":
            x = low + 0.25 + 0.5 * rng.integers(0, int((high - low) / 0.5) + 1, m)
        else:
            x = rng.uniform(low - 0.2, high + 0.2, m)
            x[0] = low
        kernels.append(parzen.Kernels(mu=rng.uniform(low - 1, high + 1, n), sigma=sigma,
                                      low=low, high=high, step=step, log=kind == "log"))
        cols.append(x)
    return np.stack(cols, axis=1), rng.dirichlet(np.ones(n)), kernels


def test_log_pdf_is_bitwise_the_plain_computation_as_shapes_grow_and_shrink() -> None:
    rng = np.random.default_rng(0)
    # Growing histories (the buffers grow), then smaller ones (views of bigger buffers).
    for n, m in [(1, 1), (5, 24), (40, 24), (300, 24), (301, 24), (2000, 24), (7, 3),
                 (2500, 48), (2, 24)]:
        for _ in range(5):
            x, weights, kernels = _random_case(rng, n, m)
            got = parzen.log_pdf(x, weights, kernels)
            assert np.array_equal(got, _fresh(x, weights, kernels), equal_nan=True)


def test_log_pdf_threads_keep_their_own_buffers() -> None:
    # Optuna's study.optimize(n_jobs=...) asks from several threads at once.
    import threading

    rng = np.random.default_rng(1)
    cases = [_random_case(rng, n, 24) for n in (50, 900, 2000, 3, 1200, 640)]
    expected = [_fresh(*case) for case in cases]
    failures: list[int] = []
    start = threading.Barrier(len(cases))

    def check(i: int) -> None:
        start.wait()
        for _ in range(30):
            if not np.array_equal(parzen.log_pdf(*cases[i]), expected[i], equal_nan=True):
                failures.append(i)
                return

    threads = [threading.Thread(target=check, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
