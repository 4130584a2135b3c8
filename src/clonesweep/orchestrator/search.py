"""The search side of a trial, between Optuna and the sweep loop.

* :class:`TrialMaker` turns a fresh Optuna trial into a :class:`~clonesweep.trials.TrialSpec`:
  it samples the parameters define-by-run (parents first, a conditional key only when its
  ``when`` holds), and for structural search builds (once per distinct set of
  ``model.<argument>`` values) the factory's base config the trial's worker rebuilds from.
* :func:`objective_values` and :func:`constraint_values` read a finished trial's objectives
  and constraints (logged metrics, ``param_count``, ``inference_latency_ms``).
* :func:`warm_start` reads the known configurations to run first, :func:`enqueue` queues them.

Nothing here talks to a backend: the loop in :mod:`clonesweep.orchestrator.loop` does.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import optuna

from clonesweep.errors import SpecError, StudyError
from clonesweep.orchestrator.study.plugins import distributions
from clonesweep.orchestrator.study.storage import load_study, mask_url
from clonesweep.orchestrator.trialrecord import read_in
from clonesweep.spec.model import (
    SPECIAL_METRICS,
    Direction,
    ObjectiveSpec,
    ParamSpec,
    SweepSpec,
)
from clonesweep.spec.params import walk
from clonesweep.spec.searchspace import check_parameters, config_params
from clonesweep.trials import FailReason, TrialResult, TrialSpec
from clonesweep.workers.keeper import metric_value
from clonesweep.workers.materialize import canonical_hash

__all__ = [
    "DriverFailure",
    "TrialMaker",
    "best_so_far",
    "constraint_values",
    "constraints_of",
    "enqueue",
    "is_feasible",
    "measures_latency",
    "monitored_objective",
    "objective_values",
    "warm_start",
]


class DriverFailure(Exception):
    """A trial that fails on the driver, before any worker sees it (its structure cannot
    be built, or a layer key does not exist in it)."""

    def __init__(self, reason: FailReason, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class _Structure:
    key: str
    config_json: str


class TrialMaker:
    """Samples a trial's params and prepares what its worker runs. One per sweep loop."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.dists = distributions(spec.parameters)
        self._structures: dict[str, _Structure | DriverFailure] = {}

    def params(self, trial: optuna.trial.Trial) -> dict[str, Any]:
        """Every active key's value: sampled ones through Optuna, in parents-first order."""
        return walk(self.spec.parameters, lambda p: p.values[0] if p.is_fixed
                    else suggest(trial, p.path, self.dists[p.path]))

    def make(self, number: int, params: dict[str, Any], seed: int) -> TrialSpec:
        """The TrialSpec of trial ``number`` for ``params`` and its root ``seed``.

        Raises:
            DriverFailure: The trial's structure cannot be built or lacks a layer key.
        """
        spec = TrialSpec(number, config_params(params, structural=self.spec.structural), seed)
        if not self.spec.structural:
            return spec
        args = {k[len("model."):]: v for k, v in params.items() if k.startswith("model.")}
        structure = self._structure(args)
        active = tuple(p for p in self.spec.parameters if p.path in params)
        try:
            check_parameters(active, json.loads(structure.config_json), str(self.spec.file))
        except SpecError as exc:
            raise DriverFailure(FailReason.INVALID_CONFIG,
                                f"structure {_call(args)}: {exc}") from exc
        return TrialSpec(spec.number, spec.params, seed, structure=structure.key,
                         structure_config_json=structure.config_json)

    def _structure(self, args: dict[str, Any]) -> _Structure:
        """Build (once per distinct ``args``) and serialize the factory's model."""
        from clonesweep.orchestrator.model import build_structure

        key = json.dumps(args, sort_keys=True)
        if key not in self._structures:
            try:
                config = build_structure(self.spec, args)
                self._structures[key] = _Structure(canonical_hash(config),
                                                   json.dumps(config, sort_keys=True))
            except SpecError as exc:
                self._structures[key] = DriverFailure(FailReason.INVALID_CONFIG, exc.message)
        found = self._structures[key]
        if isinstance(found, DriverFailure):
            raise found
        return found


def _call(args: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


def suggest(trial: optuna.trial.Trial, name: str,
            dist: optuna.distributions.BaseDistribution) -> Any:
    """``trial.suggest_*`` for an Optuna distribution (an enqueued value wins)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, optuna.distributions.FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


# -- objectives and constraints ------------------------------------------------------------
def monitored_objective(spec: SweepSpec) -> ObjectiveSpec:
    """The objective the workers report each epoch (pruning, best model): the first one
    training logs, else the training loss."""
    for objective in spec.objectives:
        if objective.metric not in SPECIAL_METRICS:
            return objective
    return ObjectiveSpec("loss", Direction.MINIMIZE)


def measures_latency(spec: SweepSpec) -> bool:
    metrics = [o.metric for o in spec.objectives] + [c.metric for c in spec.constraints]
    return "inference_latency_ms" in metrics


def objective_values(spec: SweepSpec, result: TrialResult) -> list[float] | str:
    """The finished trial's objective values, in order; or why one is missing."""
    values = []
    for objective in spec.objectives:
        value = metric_value(result, objective.metric)
        if value is None or not math.isfinite(value):
            return f"objective {objective.metric} has no finite value ({value})"
        values.append(value)
    return values


def constraint_values(spec: SweepSpec, result: TrialResult) -> dict[str, float]:
    """Label -> violation (<= 0: feasible), Optuna's convention; a metric the trial did not
    produce counts as violated (inf)."""
    out: dict[str, float] = {}
    for c in spec.constraints:
        value = metric_value(result, c.metric)
        out[c.label] = math.inf if value is None else c.violation(value)
    return out


def constraints_of(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """The trial's constraint values (Optuna >= 5: ``trial.constraints``; before, the
    ``constraints`` list the samplers' constraints_func stored)."""
    found = getattr(trial, "constraints", None)
    if isinstance(found, dict):
        return dict(found)
    return {str(i): float(v) for i, v in enumerate(trial.system_attrs.get("constraints") or [])}


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0.0 for v in constraints_of(trial).values())


def best_so_far(study: optuna.Study,
                spec: SweepSpec) -> tuple[int, float, dict[str, Any]] | None:
    """Number, first objective value and params of the best feasible complete trial."""
    sign = 1.0 if spec.objective.direction is Direction.MAXIMIZE else -1.0
    done = [t for t in study.get_trials(deepcopy=False,
                                        states=(optuna.trial.TrialState.COMPLETE,))
            if t.values and is_feasible(t)]
    if not done:
        return None
    best = max(done, key=lambda t: sign * float(t.values[0]))
    return best.number, float(best.values[0]), dict(read_in(study, best, spec.parameters).applied)


# -- warm start ----------------------------------------------------------------------------
def warm_start(spec: SweepSpec, url: str) -> list[tuple[dict[str, Any], str]]:
    """The configurations to enqueue, with where each came from: ``enqueue:`` entries, then
    ``sweep.enqueue_from``'s best trials. Read before anything is created.

    Raises:
        SpecError: The study to warm-start from does not exist.
    """
    queued = [(dict(params), "sweep file") for params in spec.enqueue]
    source = spec.sweep.enqueue_from
    if source is not None:
        other = _other_study(source.study, source.storage or url)
        queued += [(params, f"study {source.study}")
                   for params in _best_params(other, spec.parameters, source.top)]
    return queued


def enqueue(study: optuna.Study, queued: list[tuple[dict[str, Any], str]]) -> int:
    """Enqueue each configuration unless the study already holds it (a resumed sweep);
    returns how many were added. Asked trials take them first, in order."""
    before = len(study.get_trials(deepcopy=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # enqueue_trial is experimental in some versions
        for params, origin in queued:
            study.enqueue_trial(params, user_attrs={"enqueued": origin}, skip_if_exists=True)
    return len(study.get_trials(deepcopy=False)) - before


def _other_study(name: str, url: str) -> optuna.Study:
    try:
        return load_study(name, url)
    except StudyError as exc:
        raise SpecError(f"cannot warm-start from study {name!r}: {exc}",
                        field="sweep.enqueue_from", value=name,
                        hint=f"the study must exist in {mask_url(url)}") from exc


def _best_params(other: optuna.Study, parameters: tuple[ParamSpec, ...],
                 top: int) -> list[dict[str, Any]]:
    """The other study's best trials (its Pareto front if multi-objective), cut to ``top``,
    each restricted to this sweep's sampled keys and values inside their space."""
    if len(other.directions) > 1:
        best = list(other.best_trials)
    else:
        sign = -1.0 if other.direction is optuna.study.StudyDirection.MAXIMIZE else 1.0
        done = [t for t in other.get_trials(deepcopy=False,
                                            states=(optuna.trial.TrialState.COMPLETE,))
                if t.value is not None and is_feasible(t)]
        best = sorted(done, key=lambda t: sign * float(t.value or 0.0))
    space = {p.path: p for p in parameters if not p.is_fixed}
    out = []
    for t in best[:top]:
        params = {k: v for k, v in t.params.items() if k in space and space[k].contains(v)}
        if params:
            out.append(params)
    return out
