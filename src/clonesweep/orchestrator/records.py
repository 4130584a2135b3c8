"""What a trial and a study store: the one schema, written from here only.

A finished trial (a sweep's trial or an ensemble's member) carries the same user attributes
(:func:`trial_attributes`): its state, seeds, config hash, parameter count, node, worker,
attempt, phase timings, history, environment, data fingerprint, engine and, when it failed,
``fail_reason`` and ``message``. A sweep's run folder keeps one JSON record per trial
(:func:`trial_record`, ``trials/NNNNN.json``) and a ``summary.json`` (:func:`summary`).
The study itself keeps what ``clonesweep repro`` rebuilds from (:func:`study_attributes`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from clonesweep.trials import FailReason, TrialResult, TrialSpec
from clonesweep.workers.materialize import canonical_hash

if TYPE_CHECKING:
    from clonesweep.orchestrator.sweep import SweepOutcome
    from clonesweep.spec.model import SweepSpec

__all__ = [
    "FAIL_REASON",
    "MESSAGE",
    "SEED",
    "failure_attributes",
    "member_attributes",
    "study_attributes",
    "summary",
    "trial_attributes",
    "trial_record",
]

#: The trial attribute naming a :class:`~clonesweep.trials.FailReason` by its value.
FAIL_REASON = "fail_reason"
#: The trial attribute holding the failure's message (its last 2000 characters).
MESSAGE = "message"
#: The trial attribute holding its root seed, set when it is asked.
SEED = "seed"
_MESSAGE_LIMIT = 2000


def failure_attributes(reason: FailReason, message: str) -> dict[str, Any]:
    """The attributes of a trial failed with ``reason``."""
    return {FAIL_REASON: reason.value, MESSAGE: message[-_MESSAGE_LIMIT:]}


def trial_attributes(result: TrialResult) -> dict[str, Any]:
    """What every finished trial stores, sweep trial or ensemble member alike."""
    attrs: dict[str, Any] = {
        "state": result.state.value,
        "seeds": result.seeds,
        "config_hash": result.config_hash,
        "param_count": result.param_count,
        "node": result.node,
        "worker": result.worker,
        "attempt": result.attempt,
        "build_s": round(result.timings.build_s, 4),
        "train_s": round(result.timings.train_s, 4),
        "eval_s": round(result.timings.eval_s, 4),
        "history": result.history,
        "inference_latency_ms": result.inference_latency_ms,
        "environment": result.environment,
        "data_fingerprint": result.data_fingerprint,
        # What the loader returned and what decided the sample order (see DataKind).
        "data_kind": result.data_kind.value if result.data_kind is not None else None,
        "data_order": result.data_kind.order if result.data_kind is not None else None,
        "resumed_from_epoch": result.resumed_from_epoch,
        "engine": result.engine,
        # Why Keras's fit trained it instead of a faster engine (None: the engine named ran).
        "engine_fallback": (str(result.engine_fallback)
                            if result.engine_fallback is not None else None),
        # Packed trials: the group (its first trial's number) and how many trials it held.
        "packed": ({"group": result.packed[0], "size": result.packed[1]}
                   if result.packed is not None else None),
    }
    if result.reason is not None:
        attrs[FAIL_REASON] = result.reason.value
    if result.message:
        attrs[MESSAGE] = result.message[-_MESSAGE_LIMIT:]
    return attrs


def member_attributes(index: int, member_seed: int, ensemble_seed: int,
                      params: dict[str, Any], source: str) -> dict[str, Any]:
    """What an ensemble member's trial stores when it is created (before it trains)."""
    return {"member_index": index, "member_seed": member_seed, "ensemble_seed": ensemble_seed,
            "params": params, "source": source}


def trial_record(spec: TrialSpec, result: TrialResult,
                 values: dict[str, float] | None = None) -> dict[str, Any]:
    """The run folder's record of a trial (``trials/NNNNN.json``): its params (every active
    key), seed, value, attributes and the model config as built. ``values``: a
    multi-objective trial's values by metric."""
    record = {
        "number": result.number,
        "params": spec.params,
        "seed": spec.seed,
        "value": result.value,
        **trial_attributes(result),
        "config": json.loads(result.config_json) if result.config_json else None,
    }
    if values is not None:
        record["values"] = values
    return record


def study_attributes(spec: SweepSpec, base_config: dict[str, Any],
                     fixed: dict[str, Any]) -> dict[str, Any]:
    """What a sweep's study keeps so that the study alone can rebuild any trial
    (``clonesweep repro``): the constant params, the base config and its hash, the seed."""
    return {
        "fixed_params": fixed,
        "base_config_hash": canonical_hash(base_config),
        "base_config": json.dumps(base_config, sort_keys=True),
        "sweep_seed": spec.sweep.seed,
    }


def summary(outcome: SweepOutcome) -> dict[str, Any]:
    """The run folder's ``summary.json`` (and ``clonesweep run --json``'s outcome)."""
    c = outcome.counts
    return {
        "name": outcome.name,
        "storage": outcome.storage,
        "budget": outcome.budget,
        "finished_before": outcome.already_finished,
        "complete": c.complete,
        "pruned": c.pruned,
        "failed": c.failed,
        "retried": c.retried,
        "failures": outcome.failures,
        "note": outcome.note or None,
        "best": None if outcome.best is None else {
            "number": outcome.best.number, "value": outcome.best.value,
            "params": outcome.best.params},
        "best_model": str(outcome.best_model) if outcome.best_model else None,
        "pareto_models": {str(n): str(p) for n, p in outcome.front_models.items()} or None,
        "best_model_hint": outcome.model_hint or None,
        "wall_s": round(outcome.wall_s, 3),
        # Seconds the trials spent on their workers, summed over trials: compare with wall_s
        # (times the parallelism) to see the orchestration overhead.
        "trial_seconds": {k: round(v, 3) for k, v in outcome.trial_s.items()},
    }
