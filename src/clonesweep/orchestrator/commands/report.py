"""Read a sweep's study back: counts (``status``) and the best trial (``best``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna

from clonesweep.errors import StudyError
from clonesweep.orchestrator.bestmodel import on_disk
from clonesweep.orchestrator.budget import held
from clonesweep.orchestrator.search import constraints_of, is_feasible
from clonesweep.orchestrator.study.resume import counted
from clonesweep.orchestrator.study.storage import (
    load_study,
    mask_url,
    storage_url,
    study_exists_at,
)
from clonesweep.orchestrator.trialrecord import read_in
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import node_host

__all__ = ["best_payload", "open_study_of", "status_payload"]


def _open(spec: SweepSpec) -> tuple[str, optuna.Study]:
    url = storage_url(spec)
    if spec.sweep.storage is None and not study_exists_at(url):
        # Don't create an empty storage file just by looking.
        raise StudyError(f"no study for sweep {spec.name!r} in {spec.run_folder}; "
                         "run the sweep first (clonesweep run FILE)")
    return url, load_study(spec.name, url)


def open_study_of(spec: SweepSpec) -> optuna.Study:
    """The sweep's existing study (StudyError if the sweep never ran)."""
    return _open(spec)[1]


def status_payload(spec: SweepSpec) -> dict[str, Any]:
    """Counts of the sweep's trials by state, fail reasons, and the best value so far."""
    url, study = _open(spec)
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name.lower() for t in trials)
    reasons = Counter(str(t.user_attrs.get("fail_reason", "unknown")) for t in trials
                      if t.state is optuna.trial.TrialState.FAIL)
    finished = states["complete"] + states["pruned"] + states["fail"]
    # Finished trials per host (and state): where trials ran, by the machine's name.
    hosts: dict[str, Counter[str]] = {}
    for t in trials:
        node = t.user_attrs.get("node")
        if node and t.state.is_finished():
            hosts.setdefault(node_host(str(node)), Counter())[t.state.name.lower()] += 1
    budget = held(study)
    best = _best(study)
    extra: dict[str, Any] = {}
    if spec.is_multi_objective:
        extra["pareto_front_size"] = len(_front(study))
    if spec.constraints:
        complete = [t for t in trials if t.state is optuna.trial.TrialState.COMPLETE]
        extra["feasible"] = sum(is_feasible(t) for t in complete)
    return {
        "name": spec.name,
        "storage": mask_url(url),
        # What the study's last run aimed for (--trials, --add-trials), not the file's figure.
        "budget": budget if budget is not None else spec.sweep.trials,
        "finished": finished,
        "counted": sum(counted(t) for t in trials),
        "budget_met": sum(counted(t) for t in trials) >= (budget or spec.sweep.trials),
        "complete": states["complete"],
        "pruned": states["pruned"],
        "failed": states["fail"],
        "running": states["running"],
        "fail_reasons": dict(reasons),
        "hosts": {host: dict(counts) for host, counts in sorted(hosts.items())},
        "best_value": None if best is None else best.value,
        "best_trial": None if best is None else best.number,
        **extra,
    }


def best_payload(spec: SweepSpec) -> dict[str, Any]:
    """The best complete trial with its params and what it needs to be reproduced.

    With constraints, the best feasible trial. A multi-objective sweep has no single best:
    ``best`` then maps ``"trial <number>"`` to each trial of the Pareto front (feasible ones
    only, sorted by the first objective), and ``pareto_front`` lists their numbers.
    """
    url, study = _open(spec)
    if spec.is_multi_objective:
        return _front_payload(spec, url, study)
    best = _best(study)
    kept = on_disk(spec, study)
    payload: dict[str, Any] = {"name": spec.name, "storage": mask_url(url), "best": None}
    if best is None:
        return payload
    attrs = best.user_attrs
    payload["best"] = {
        "number": best.number,
        spec.objective.metric: best.value,
        "params": read_in(study, best, spec.parameters).applied,
        "seed": attrs.get("seed"),
        "config_hash": attrs.get("config_hash"),
        "param_count": attrs.get("param_count"),
        "node": attrs.get("node"),
        "config_file": str(spec.run_folder / "trials" / f"{best.number:05d}.json"),
        "model_file": str(kept.best_model) if kept.best_model else None,
        **_extras(spec, best),
    }
    hint = kept.hint(spec.file)
    if hint:
        payload["best"]["model_hint"] = hint
    return payload


def _front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The Pareto front (Optuna keeps only feasible trials when there are constraints)."""
    return sorted(study.best_trials, key=lambda t: t.number)


def _front_payload(spec: SweepSpec, url: str, study: optuna.Study) -> dict[str, Any]:
    first = spec.objectives[0]
    sign = -1.0 if first.direction.value == "maximize" else 1.0
    front = sorted(_front(study), key=lambda t: sign * float(t.values[0]))
    kept = on_disk(spec, study)
    best = {f"trial {t.number}": {
        "number": t.number,
        **{o.metric: v for o, v in zip(spec.objectives, t.values, strict=True)},
        "params": read_in(study, t, spec.parameters).applied,
        "seed": t.user_attrs.get("seed"),
        "config_hash": t.user_attrs.get("config_hash"),
        "param_count": t.user_attrs.get("param_count"),
        "config_file": str(spec.run_folder / "trials" / f"{t.number:05d}.json"),
        "model_file": str(kept.front_models[t.number]) if t.number in kept.front_models
        else None,
        **_extras(spec, t),
    } for t in front}
    return {"name": spec.name, "storage": mask_url(url),
            "objectives": [f"{o.metric} ({o.direction.value})" for o in spec.objectives],
            "pareto_front": [t.number for t in front], "best": best or None,
            **({"model_hint": hint} if (hint := kept.hint(spec.file)) else {})}


def _extras(spec: SweepSpec, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    latency = trial.user_attrs.get("inference_latency_ms")
    if latency is not None:
        extra["inference_latency_ms"] = latency
    if spec.constraints:
        extra["constraints"] = constraints_of(trial)
    return extra


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    if len(study.directions) > 1:
        return None  # no single best: see best_payload's Pareto front
    try:
        return study.best_trial
    except ValueError:  # no complete (feasible) trial yet
        return None
