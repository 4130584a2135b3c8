"""Samplers and pruners by name, and the distributions a sweep's parameters make.

Sampler and pruner settings from the sweep file are checked against the Optuna class's own
signature, so a typo is an error at start-up that names the field, not a silent default.
The TPE sampler is Optuna's with its history kept across asks and its candidates scored over
arrays (the private use it takes is in :mod:`clonesweep.orchestrator._optuna`). Split from
:mod:`~clonesweep.orchestrator.study.storage`, which opens storages and studies.

About 300 lines: samplers and pruners share the checks of their settings against the
class's signature, and the messages those checks give.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any

import optuna

from clonesweep.errors import SpecError
from clonesweep.orchestrator import _optuna
from clonesweep.spec.model import Distribution, ParamSpec, PlugSpec, SweepSpec
from clonesweep.workers.seeding import derive_seed

__all__ = [
    "CONSTRAINT_AWARE",
    "PRUNERS",
    "SAMPLERS",
    "TPESampler",
    "distributions",
    "fixed_params",
    "make_pruner",
    "make_sampler",
]

#: Optuna's TPE sampler, the same draws for the same history and seed, cheaper per ask: its
#: history kept across asks (:mod:`~clonesweep.orchestrator.study.tpe`), its candidates
#: scored over arrays (:mod:`~clonesweep.orchestrator.study.parzen`). It overrides TPE
#: internals, so it lives in the fence module.
TPESampler = _optuna.TPESampler


SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "nsga3": optuna.samplers.NSGAIIISampler,
    "qmc": optuna.samplers.QMCSampler,
    "bruteforce": optuna.samplers.BruteForceSampler,
}

PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "patient": optuna.pruners.PatientPruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "none": optuna.pruners.NopPruner,
    "nop": optuna.pruners.NopPruner,
}


def _construct(kind: str, plug: PlugSpec, registry: dict[str, Callable[..., Any]],
               file: str, extra: dict[str, Any]) -> Any:
    field = f"sweep.{kind}"
    if plug.name not in registry:
        close = difflib.get_close_matches(plug.name, registry, n=1)
        raise SpecError(f"unknown {kind}", file=file, field=f"{field}.name", value=plug.name,
                        hint=(f"did you mean '{close[0]}'? " if close else "")
                        + f"known: {', '.join(sorted(registry))}")
    factory = registry[plug.name]
    accepted = set(inspect.signature(factory).parameters)
    for key in plug.settings:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            raise SpecError(f"{plug.name} {kind} has no setting {key!r}", file=file,
                            field=f"{field}.{key}", value=plug.settings[key],
                            hint=(f"did you mean '{close[0]}'? " if close else "")
                            + f"it accepts: {', '.join(sorted(accepted))}")
    parameters = inspect.signature(factory).parameters
    for key, value in plug.settings.items():
        _check_type(f"{field}.{key}", f"{plug.name} {kind}", parameters[key], value, file)
    kwargs = {k: v for k, v in extra.items() if k in accepted and k not in plug.settings}
    kwargs.update(plug.settings)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return factory(**kwargs)
    except (TypeError, ValueError, ImportError) as exc:
        raise SpecError(f"{plug.name} {kind} refused its settings: {exc}", file=file,
                        field=field, value=dict(plug.settings),
                        hint=f"see the settings of optuna's {_type_name(factory)}") from exc


#: Annotation words -> the YAML value types they take (an int is a float too; a bool is not
#: an int here, although Python says it is).
_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float),
                                              "bool": (bool,), "str": (str,)}


def _check_type(field: str, what: str, param: inspect.Parameter, value: Any,
                file: str) -> None:
    """Refuse a setting whose type its annotation (or default) rules out: Optuna checks
    few types when it builds a sampler, and a wrong one fails mid-sweep instead."""
    annotation = param.annotation if isinstance(param.annotation, str) else \
        getattr(param.annotation, "__name__", "")
    words = {w.strip() for w in re.split(r"[|\[\],]", annotation.replace("Optional", ""))
             if w.strip()}
    if words and words <= {*_SIMPLE_TYPES, "None"}:
        types = tuple(t for w in words - {"None"} for t in _SIMPLE_TYPES[w])
        nullable = "None" in words or "Optional" in annotation
    elif isinstance(param.default, (bool, int, float)) and param.default is not None:
        types, nullable = _SIMPLE_TYPES[type(param.default).__name__], False
    else:
        return
    if value is None and nullable:
        return
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        expected = " or ".join(sorted({t.__name__ for t in types}))
        raise SpecError(f"{what}: expected {expected}{' or null' if nullable else ''}, not "
                        f"a {type(value).__name__}", file=file, field=field, value=value,
                        hint=f"write it as a YAML {expected}")


def _type_name(factory: Any) -> str:
    return f"{getattr(factory, '__module__', '')}.{getattr(factory, '__qualname__', factory)}"


#: Samplers that need a package clonesweep does not install by default: name -> (module,
#: what to install).
_SAMPLER_NEEDS = {
    "gp": ("torch", "PyTorch: pip install 'clonesweep[gp]' (or pip install torch; the CPU "
                    "build is enough)"),
    "cmaes": ("cmaes", "the cmaes package: pip install cmaes"),
}
#: Samplers whose own sampling uses constraints (all of them keep the constraint values, and
#: ``best`` only picks feasible trials whatever the sampler).
CONSTRAINT_AWARE = ("tpe", "nsga2", "nsga3", "gp")


def make_sampler(spec: SweepSpec, resume_at: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler named in ``sweep.sampler``, seeded with the sweep seed unless set.

    ``resume_at``: the number of trials the study holds already. A resumed sweep's sampler
    is seeded anew from its seed (the file's, else the sweep seed) and that count, so a
    random or TPE sampler does not replay the first run's draws (TPE reads its history from
    the study).

    Raises:
        SpecError: Unknown settings, settings the sampler refuses, or a sampler whose
            optional dependency is missing (the message says what to install).
    """
    name = spec.sweep.sampler.name
    _check_installed(spec, name)
    plug = spec.sweep.sampler
    if resume_at:
        root = int(plug.settings.get("seed", spec.sweep.seed))  # a seed in the file wins
        plug = PlugSpec(plug.name, {**plug.settings,
                                    "seed": derive_seed(root, "resume", resume_at)})
    extra: dict[str, Any] = {"seed": spec.sweep.seed}
    if name in ("grid", "bruteforce"):
        extra["search_space"] = _grid(spec)
    if name == "tpe" and (spec.sweep.parallel > 1 or spec.training.pack.enabled):
        # Keep parallel trials apart: pending trials count as (pessimistic) observations.
        # Packing asks several trials before telling any, even with one worker.
        extra["constant_liar"] = True
    if spec.constraints and not hasattr(optuna.trial.Trial, "set_constraint"):
        # Optuna < 5 reads constraints only through constraints_func; the driver stores the
        # values as the ``constraints`` user attribute before it tells the trial.
        extra["constraints_func"] = _constraints_from_user_attrs
    return _construct("sampler", plug, SAMPLERS, str(spec.file), extra)


def _constraints_from_user_attrs(trial: optuna.trial.FrozenTrial) -> list[float]:
    return [float(v) for v in trial.user_attrs.get("constraints", [])]


def _check_installed(spec: SweepSpec, name: str) -> None:
    need = _SAMPLER_NEEDS.get(name)
    if need is None:
        return
    module, what = need
    try:
        importlib.import_module(module)
    except ImportError:
        raise SpecError(f"the {name} sampler needs {what}; it is not installed here",
                        file=str(spec.file), field="sweep.sampler", value=name,
                        hint=f"install it, or pick another sampler ({_alternatives(name)})")\
            from None


def _alternatives(name: str) -> str:
    return {"gp": "tpe is the closest without PyTorch",
            "cmaes": "tpe with multivariate: true is the closest"}.get(name, "tpe")


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    """The pruner named in ``sweep.pruner`` (``none`` by default).

    ``patient`` wraps another pruner given as ``wrapped: <name or mapping>`` (alias
    ``wrapped_pruner``), e.g. ``{name: patient, patience: 2, wrapped: {name: median}}``.
    """
    return _pruner(spec, spec.sweep.pruner, "pruner")


def _pruner(spec: SweepSpec, plug: PlugSpec, kind: str) -> optuna.pruners.BasePruner:
    extra: dict[str, Any] = {}
    if plug.name == "hyperband":
        extra["max_resource"] = spec.training.epochs
    if plug.name == "patient":
        plug = _unwrap(spec, plug, kind, extra)
    pruner: optuna.pruners.BasePruner = _construct(kind, plug, PRUNERS, str(spec.file), extra)
    return pruner


def _unwrap(spec: SweepSpec, plug: PlugSpec, kind: str, extra: dict[str, Any]) -> PlugSpec:
    """Build the pruner a ``patient`` pruner wraps; return the plug without it."""
    settings = dict(plug.settings)
    keys = [k for k in ("wrapped", "wrapped_pruner") if k in settings]
    if len(keys) > 1:
        raise SpecError("give 'wrapped' or its alias 'wrapped_pruner', not both",
                        file=str(spec.file), field=f"sweep.{kind}.wrapped_pruner")
    raw = settings.pop(keys[0]) if keys else None
    if raw is not None:
        field = f"{kind}.{keys[0]}"
        if isinstance(raw, str):
            inner = PlugSpec(raw)
        elif isinstance(raw, dict) and isinstance(raw.get("name"), str):
            inner = PlugSpec(raw["name"], {k: v for k, v in raw.items() if k != "name"})
        else:
            raise SpecError("expected a pruner name or {name: ..., <setting>: ...}",
                            file=str(spec.file), field=f"sweep.{field}", value=raw)
        if inner.name in ("none", "nop", "patient"):
            raise SpecError(f"a patient pruner cannot wrap '{inner.name}'", file=str(spec.file),
                            field=f"sweep.{field}", value=inner.name,
                            hint="wrap median, percentile, successive_halving, hyperband, "
                                 "threshold or wilcoxon")
        extra["wrapped_pruner"] = _pruner(spec, inner, field)
    return PlugSpec(plug.name, settings)


def _grid(spec: SweepSpec) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for p in spec.parameters:
        if p.is_fixed:
            continue
        if p.distribution is Distribution.CATEGORICAL:
            grid[p.path] = list(p.values)
        elif p.step is not None and p.low is not None and p.high is not None:
            n = round((p.high - p.low) / p.step)
            grid[p.path] = [p.low + i * p.step for i in range(n + 1)]
        elif p.distribution is Distribution.INT_UNIFORM and p.low is not None:
            grid[p.path] = list(range(int(p.low), int(p.high or p.low) + 1))
        else:
            raise SpecError("a grid search needs a finite set of values for every parameter",
                            file=str(spec.file), field=f"parameters.{p.path}",
                            value=p.distribution.value,
                            hint="use `values: [...]`, an int range, or add `step:`")
    return grid


def distributions(params: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Optuna distributions for every sampled (non-constant) parameter."""
    D = Distribution
    out: dict[str, Any] = {}
    for p in params:
        if p.is_fixed:
            continue
        if p.distribution is D.CATEGORICAL:
            out[p.path] = optuna.distributions.CategoricalDistribution(list(p.values))
        elif p.distribution in (D.INT_UNIFORM, D.INT_LOG_UNIFORM_VALUES):
            log = p.distribution is D.INT_LOG_UNIFORM_VALUES or p.log
            out[p.path] = optuna.distributions.IntDistribution(
                int(p.low or 0), int(p.high or 0), log=log, step=1 if log else int(p.step or 1))
        else:
            log = p.distribution is D.LOG_UNIFORM_VALUES or p.log
            step = None if log else p.step
            out[p.path] = optuna.distributions.FloatDistribution(
                float(p.low or 0.0), float(p.high or 0.0), log=log,
                step=float(step) if step is not None else None)
    return out


def fixed_params(params: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Values of ``value:`` (constant) parameters, applied to every trial."""
    return {p.path: p.values[0] for p in params if p.is_fixed and not p.is_conditional}
