"""What a trial trained: one record, written when the trial is asked, read by every command.

Optuna's ``trial.params`` holds only the values a sampler suggested. A trial also trains with
the sweep file's constants, the ``otherwise`` value of every key whose ``when`` failed, and
(structural search) the ``model.<argument>`` values its structure was built from; the
``switch.<name>`` states decide which of those apply. The driver knows all of them when it
asks the trial, so it stores them there, once:

* :func:`store` writes the applied values as the trial's ``applied`` user attribute (the run
  folder's ``trials/NNNNN.json`` carries the same dict as ``params``);
* :func:`read` gives them back as a :class:`TrialRecord`; ``repro``, ``diff``, ``best``, the
  HTML report and ``ensemble --from-best`` all read a trial through it.

A study written before the attribute existed is read by replaying the sweep file's
conditions over the trial's sampled params (``legacy`` is then True): the same values the
driver applied, as long as the sweep file's ``parameters`` did not change since.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

from clonesweep.spec.model import ParamSpec
from clonesweep.spec.params import SKIP, walk
from clonesweep.spec.searchspace import config_params

__all__ = ["APPLIED_ATTR", "TrialRecord", "applied_values", "read", "read_in", "store"]

#: The trial user attribute holding every applied key -> value.
APPLIED_ATTR = "applied"

_Trial = optuna.trial.FrozenTrial | optuna.trial.Trial


@dataclass(frozen=True)
class TrialRecord:
    """Every key's applied value for one trial, as it trained.

    Attributes:
        number: The trial number.
        applied: Key -> value for every key that applied: sampled, constant, ``otherwise``,
            ``switch.*`` and ``model.*``. A conditional key without ``otherwise`` whose
            condition failed is absent: the base model's value stayed.
        seed: The trial's root seed (None: the trial never got one).
        structure: The hash of the trial's structure (structural search), else None.
        legacy: The study predates the stored record; ``applied`` was replayed from the
            sweep file's conditions.
    """

    number: int
    applied: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    structure: str | None = None
    legacy: bool = False

    @property
    def config_params(self) -> dict[str, Any]:
        """What a worker applies to the config: no ``switch.*`` keys, and no ``model.*`` keys
        when they were a factory's arguments (the trial then names its structure)."""
        return config_params(dict(self.applied), structural=self.structure is not None)

    @property
    def structure_args(self) -> dict[str, Any]:
        """The factory's arguments (``model.<argument>`` without the prefix)."""
        return {k[len("model."):]: v for k, v in self.applied.items() if k.startswith("model.")}

    @property
    def switches(self) -> dict[str, Any]:
        return {k: v for k, v in self.applied.items() if k.startswith("switch.")}


def store(trial: optuna.trial.Trial, applied: Mapping[str, Any]) -> None:
    """Record ``applied`` (from ``TrialMaker.params``) on the just-asked ``trial``."""
    trial.set_user_attr(APPLIED_ATTR, dict(applied))


def applied_values(parameters: tuple[ParamSpec, ...], sampled: Mapping[str, Any]) -> dict[str, Any]:
    """Replay the sweep's conditions over a trial's ``sampled`` params (parents first, the
    order of ``parameters``): the values the driver applied."""
    def value_of(p: ParamSpec) -> Any:
        if p.is_fixed:
            return p.values[0]
        # Not sampled: the trial failed before it was (or the space changed).
        return sampled.get(p.path, SKIP)

    return walk(parameters, value_of)


def read(trial: _Trial, parameters: tuple[ParamSpec, ...] | None = None,
         fixed: Mapping[str, Any] | None = None) -> TrialRecord:
    """The record of ``trial``.

    Without the stored attribute (an older study), ``parameters`` (the sweep file's) replays
    the conditions; without them either, the sampled params plus ``fixed`` (the study's
    ``fixed_params``) are all that is known.
    """
    attrs = trial.user_attrs
    seed, structure = attrs.get("seed"), attrs.get("structure")
    record = TrialRecord(trial.number, seed=None if seed is None else int(seed),
                         structure=None if structure is None else str(structure))
    stored = attrs.get(APPLIED_ATTR)
    if isinstance(stored, dict):
        return replace(record, applied=dict(stored))
    sampled = dict(trial.params)
    if parameters is not None:
        return replace(record, applied=applied_values(parameters, sampled), legacy=True)
    return replace(record, applied={**sampled, **(fixed or {})}, legacy=True)


def read_in(study: optuna.Study, trial: _Trial,
            parameters: tuple[ParamSpec, ...] | None = None) -> TrialRecord:
    """:func:`read` with the study's ``fixed_params`` as the last fallback."""
    return read(trial, parameters, study.user_attrs.get("fixed_params", {}))
