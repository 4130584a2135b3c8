"""The search space as data: one entry (:class:`ParamSpec`), its conditions, and the one walk
every trial's values take through them.

A trial's values are chosen define-by-run, parents first (the order of
``SweepSpec.parameters``): an entry whose ``when`` does not hold for the values chosen so far
is inactive and applies its ``otherwise`` (if it has one); an active entry takes a value.
:func:`walk` is that order written once; what "takes a value" means is its caller's: Optuna's
suggestion (``orchestrator/search.py``), a stored trial's sampled value
(``orchestrator/trialrecord.py``), a corner's bound (``orchestrator/commands/corners.py``).

Pure Python: no Keras, Ray or Optuna.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["SKIP", "Condition", "Distribution", "ParamSpec", "same_value", "walk"]


class Distribution(str, enum.Enum):
    """W&B-style distribution names accepted under ``parameters.<path>.distribution``."""

    CONSTANT = "constant"
    CATEGORICAL = "categorical"
    UNIFORM = "uniform"
    INT_UNIFORM = "int_uniform"
    Q_UNIFORM = "q_uniform"
    LOG_UNIFORM_VALUES = "log_uniform_values"
    INT_LOG_UNIFORM_VALUES = "int_log_uniform_values"


@dataclass(frozen=True)
class Condition:
    """``when: {<key>: <value or [values]>}``: the param is sampled only if ``key`` took one
    of ``values`` in this trial (and was itself active)."""

    key: str
    values: tuple[Any, ...]

    def holds(self, params: dict[str, Any]) -> bool:
        if self.key not in params:
            return False
        return any(same_value(params[self.key], v) for v in self.values)


def same_value(a: Any, b: Any) -> bool:
    """Equality as YAML means it: ``true`` is not ``1``, but ``2`` is ``2.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


@dataclass(frozen=True)
class ParamSpec:
    """One search-space entry.

    Attributes:
        path: The search-space key (``layers.hidden.units``, ``layers[Dense].units``,
            ``optimizer.learning_rate``, ``train.batch_size``).
        distribution: What to sample from.
        values: The choices (CATEGORICAL) or the single value (CONSTANT).
        low, high: Bounds (inclusive) for numeric distributions.
        log: Sample on a log scale.
        step: Grid step for Q_UNIFORM / INT_* distributions (None: continuous / 1).
        when: Conditions that must all hold for the param to be sampled (empty: always).
        otherwise: The value applied when a condition fails (only if ``has_otherwise``;
            without it the base model's value stays).
        has_otherwise: Whether ``otherwise`` was given (``null`` is a valid value).
    """

    path: str
    distribution: Distribution
    values: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    when: tuple[Condition, ...] = ()
    otherwise: Any = None
    has_otherwise: bool = False

    @property
    def is_fixed(self) -> bool:
        return self.distribution is Distribution.CONSTANT

    @property
    def is_conditional(self) -> bool:
        return bool(self.when)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this entry can produce."""
        if self.distribution in (Distribution.CONSTANT, Distribution.CATEGORICAL):
            return any(same_value(value, v) for v in self.values)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.distribution.value.startswith("int_") and not isinstance(value, int):
            return False
        return self.low is not None and self.high is not None and \
            bool(self.low <= value <= self.high)

    def describe(self) -> str:
        """The entry's space, for messages."""
        if self.distribution in (Distribution.CONSTANT, Distribution.CATEGORICAL):
            return f"values {list(self.values)!r}"
        return f"{self.distribution.value} in [{self.low!r}, {self.high!r}]"

    def active(self, params: dict[str, Any]) -> bool:
        """Whether every condition holds for the values chosen so far in a trial."""
        return all(c.holds(params) for c in self.when)


#: Returned by a :func:`walk` callback for an active entry that takes no value (a stored
#: trial that failed before it was sampled): the entry is left out, as if inactive without
#: ``otherwise``.
SKIP: Any = object()


def walk(parameters: tuple[ParamSpec, ...],
         value_of: Callable[[ParamSpec], Any]) -> dict[str, Any]:
    """Every applied key's value, conditions read define-by-run (parents first).

    ``value_of(p)`` is called once for each active entry, in order, and gives its value (or
    :data:`SKIP`); an inactive entry applies its ``otherwise`` without a call. Conditions
    read the values of active entries only, never an ``otherwise``.

    Example:
        >>> units = ParamSpec("layers.hidden.units", Distribution.CATEGORICAL, (32, 64))
        >>> rate = ParamSpec("layers.drop.rate", Distribution.CONSTANT, (0.2,),
        ...                  when=(Condition("layers.hidden.units", (64,)),),
        ...                  otherwise=0.0, has_otherwise=True)
        >>> walk((units, rate), lambda p: p.values[0])
        {'layers.hidden.units': 32, 'layers.drop.rate': 0.0}
    """
    chosen: dict[str, Any] = {}  # active keys only: what conditions read
    applied: dict[str, Any] = {}
    for p in parameters:
        if not p.active(chosen):
            if p.has_otherwise:
                applied[p.path] = p.otherwise
            continue
        value = value_of(p)
        if value is not SKIP:
            chosen[p.path] = applied[p.path] = value
    return applied
