"""The log-density of TPE's Parzen estimators at its candidates, over whole arrays.

TPE scores each of its candidates (24 by default) by the log-density of two mixtures, one
kernel per trial of the history: ``log l(x) - log g(x)``. That is candidates x kernels x
parameters of work, and at 2,000 trials it was ~60% of an ask's CPU once the history was
kept across asks (bench/README.md, "TPE at scale"). Optuna evaluates each kernel's
truncated-normal log-density per candidate with complex-valued arrays, an error function of
its own in Python for small arrays, and the kernel's normalising mass recomputed for every
candidate. :func:`log_pdf` computes the same sum with the terms that depend on the kernel
alone computed once per kernel (its log-weight, ``log sigma``, the mass inside the bounds),
and scipy's ``ndtr`` / ``log_ndtr``: the same mathematics, equal to Optuna's to float
rounding (~1e-12 relative, ``tests/unit/orchestrator/study/test_parzen.py``), not bitwise.

The candidates x kernels matrices (24 x 2,000 float64 at 2,000 trials: 384 KB each) are
computed in place in two work buffers kept per thread and grown as the history grows, not
in fresh arrays: a fresh array that large is new memory from the system on every call, and
its page faults cost more than the arithmetic (a 3x slower log-density in a microbenchmark
on the 2-core machine; bench/README.md, "TPE at scale"). Same operations, same order:
the results are bitwise those of fresh arrays.

Kernels come as :class:`Kernels`, one per parameter, which
:mod:`clonesweep.orchestrator._optuna` reads from Optuna's estimator; this module uses no
Optuna code.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, ndtr

__all__ = ["Kernels", "log_gauss_mass", "log_pdf"]

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))
# The log-sum-exp's terms are raised to this floor before ``exp``: below about -708, exp's
# result is subnormal or zero, and numpy's vectorised exp takes a slow path for each such
# element (an ask at 2,000 trials has thousands: its log-sum-exp took 385 us instead of
# ~60). Each term sits next to the row's largest, exp(0) = 1, so a term of exp(-700) ~ 1e-304
# (or thousands of them) is below half an ulp of the sum: the sum and the log-density are
# the same as without the floor (``test_parzen.py`` compares them with ``==``).
_FLOOR = -700.0


@dataclass(frozen=True)
class Kernels:
    """One parameter's kernels in a Parzen estimator (``n`` kernels).

    Attributes:
        mu: The kernels' centres, shape ``(n,)`` (in log space for a log parameter); None
            for a categorical parameter.
        sigma: Their widths, shape ``(n,)``; None for a categorical parameter.
        low: The lower bound the kernels are truncated to (in log space for a log
            parameter; half a step below the lowest value for a stepped one).
        high: The upper bound, likewise.
        step: The step of a discrete parameter, 0.0 for a continuous one.
        log: Whether the parameter is sampled in log space.
        choices: For a categorical parameter, each kernel's probability of each choice,
            shape ``(n, choices)``; None otherwise.
    """

    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    low: float = 0.0
    high: float = 0.0
    step: float = 0.0
    log: bool = False
    choices: np.ndarray | None = None


def log_pdf(x: np.ndarray, weights: np.ndarray, kernels: Sequence[Kernels]) -> np.ndarray:
    """The mixture's log-density at each row of ``x``.

    Args:
        x: Candidates, shape ``(m, parameters)``, in the parameters' internal values (a
            categorical one as its choice's index, a log one not yet in log space).
        weights: The kernels' weights, shape ``(n,)``, summing to 1.
        kernels: One :class:`Kernels` per column of ``x``.

    Returns:
        Shape ``(m,)``: ``log sum_k weights[k] prod_j p_kj(x[:, j])``.
    """
    shape = (len(x), len(weights))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        per_kernel = np.log(weights)  # terms that depend on the kernel alone
        per_pair = _work(0, shape)  # candidates x kernels
        per_pair.fill(0.0)
        term = _work(1, shape)
        for j, k in enumerate(kernels):
            if k.choices is not None:
                np.take(np.log(k.choices).T, x[:, j].astype(np.int64), axis=0, out=term)
            else:
                assert k.mu is not None and k.sigma is not None
                per_kernel -= log_gauss_mass((k.low - k.mu) / k.sigma,
                                             (k.high - k.mu) / k.sigma)
                if k.step == 0.0:
                    _continuous(x[:, j], k, term)
                    per_kernel -= _LOG_SQRT_2PI + np.log(k.sigma)
                else:
                    _discrete(x[:, j], k, term)
            per_pair += term
        per_pair += per_kernel
        top = per_pair.max(axis=1)
        dead = np.isneginf(top)  # all kernels at zero density: -inf, not NaN
        top[dead] = 0
        per_pair -= top[:, None]
        np.maximum(per_pair, _FLOOR, out=per_pair)  # NaN stays NaN
        out = np.log(np.exp(per_pair, out=per_pair).sum(axis=1)) + top
        out[dead] = -np.inf
        return out


_buffers = threading.local()


def _work(index: int, shape: tuple[int, int]) -> np.ndarray:
    """Work buffer ``index`` of this thread, as an uninitialised array of ``shape``; grown
    (with room for the history to grow) when too small."""
    held: list[np.ndarray] = getattr(_buffers, "held", None) or []
    _buffers.held = held
    while len(held) <= index:
        held.append(np.empty(0))
    size = shape[0] * shape[1]
    if held[index].size < size:
        held[index] = np.empty(size + size // 2)
    return held[index][:size].reshape(shape)


def _continuous(x: np.ndarray, k: Kernels, out: np.ndarray) -> None:
    """-z^2/2 for each candidate and kernel, into ``out``: -inf outside the bounds, NaN for
    a kernel of no width between equal bounds (as Optuna's ``logpdf``)."""
    assert k.mu is not None and k.sigma is not None
    v = np.log(x) if k.log else x
    z = np.subtract.outer(v, k.mu, out=out)
    z /= k.sigma
    a, b = (k.low - k.mu) / k.sigma, (k.high - k.mu) / k.sigma
    # Subtraction and division by sigma > 0 keep order, so candidates within the bounds
    # (TPE's always are) are within every kernel's: the per-pair test is needed only when
    # some candidate is not, or some width is not positive.
    inside = bool(((v >= k.low) & (v <= k.high)).all() and (k.sigma > 0).all())
    outside = None if inside else (z < a) | (z > b)
    np.square(z, out=z)
    z *= -0.5
    if outside is not None and outside.any():
        z[outside] = -np.inf
    if (flat := a == b).any():
        z[:, flat] = np.nan


def _discrete(x: np.ndarray, k: Kernels, out: np.ndarray) -> None:
    """The log-mass of each candidate's step under each kernel, into ``out``, computed once
    per distinct candidate and distinct (mu, sigma) pair (stepped values repeat, and so do
    kernels)."""
    assert k.mu is not None and k.sigma is not None
    values, at_value = np.unique(x, return_inverse=True)
    order = np.lexsort((k.sigma, k.mu))
    mu, sigma = k.mu[order], k.sigma[order]
    first = np.ones(len(mu), dtype=bool)
    first[1:] = (mu[1:] != mu[:-1]) | (sigma[1:] != sigma[:-1])
    at_kernel = np.empty(len(mu), dtype=np.intp)
    at_kernel[order] = np.cumsum(first) - 1
    mu, sigma = mu[first], sigma[first]
    left, right = values - k.step / 2, values + k.step / 2
    if k.log:
        left, right = np.log(left), np.log(right)
    mass = log_gauss_mass((left[:, None] - mu) / sigma, (right[:, None] - mu) / sigma)
    np.take(mass[at_value.ravel()], at_kernel, axis=1, out=out)


def log_gauss_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``log(Phi(b) - Phi(a))`` elementwise, in the tail where it is accurate: the left
    tail for intervals left of 0, mirrored for those right of 0, ``log1p`` of the two tails
    for those across 0 (Optuna's ``_log_gauss_mass``, in real arithmetic).

    Intervals right of 0 are mirrored first, so that one formula serves both tails; the
    formula of the more common case runs over the whole array and the other only over its
    elements (gathering elements costs more than the formula where most are in one case).
    """
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        right = a > 0
        if right.any():
            lo, hi = np.where(right, -b, a), np.where(right, -a, b)
        else:
            lo, hi = a, b
        central = hi > 0  # across 0 (NaN: neither; the tail formula gives NaN)
        n_central = int(np.count_nonzero(central))
        if 2 * n_central > central.size:
            out = _central(a, b)
            if n_central < central.size:
                tail = ~central
                out[tail] = _log_diff(log_ndtr(hi[tail]), log_ndtr(lo[tail]))
        else:
            out = _log_diff(log_ndtr(hi), log_ndtr(lo))
            if n_central:
                out[central] = _central(a[central], b[central])
    return out


def _central(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.log1p(-ndtr(a) - ndtr(-b))


def _log_diff(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    return log_p + np.log1p(-np.exp(log_q - log_p))
