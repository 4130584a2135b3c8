"""Read a sweep's study back: counts (``status``) and the best trial (``best``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna

from clonesweep.errors import StudyError
from clonesweep.orchestrator.study import load_study, mask_url, storage_url
from clonesweep.spec.model import SweepSpec

__all__ = ["best_payload", "open_study_of", "status_payload"]


def _open(spec: SweepSpec) -> tuple[str, optuna.Study]:
    url = storage_url(spec)
    if spec.sweep.storage is None and not (spec.run_folder / "study.db").exists():
        # Don't let SQLite create an empty database just by looking.
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
    best = _best(study)
    return {
        "name": spec.name,
        "storage": mask_url(url),
        "budget": spec.sweep.trials,
        "finished": finished,
        "complete": states["complete"],
        "pruned": states["pruned"],
        "failed": states["fail"],
        "running": states["running"],
        "fail_reasons": dict(reasons),
        "best_value": None if best is None else best.value,
        "best_trial": None if best is None else best.number,
    }


def best_payload(spec: SweepSpec) -> dict[str, Any]:
    """The best complete trial with its params and what it needs to be reproduced."""
    url, study = _open(spec)
    best = _best(study)
    model = spec.run_folder / "best.keras"
    payload: dict[str, Any] = {"name": spec.name, "storage": mask_url(url), "best": None}
    if best is None:
        return payload
    attrs = best.user_attrs
    payload["best"] = {
        "number": best.number,
        spec.objective.metric: best.value,
        "params": best.params | study.user_attrs.get("fixed_params", {}),
        "seed": attrs.get("seed"),
        "config_hash": attrs.get("config_hash"),
        "param_count": attrs.get("param_count"),
        "node": attrs.get("node"),
        "config_file": str(spec.run_folder / "trials" / f"{best.number:05d}.json"),
        "model_file": str(model) if model.exists() else None,
    }
    return payload


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None
