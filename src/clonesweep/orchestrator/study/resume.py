"""Resuming a sweep from its study: the storage is the only source of truth.

A driver that died (SIGKILL, a lost machine) leaves its trials RUNNING in the study. The next
driver, once it holds the lease (:mod:`clonesweep.orchestrator.study.lease`), fails each of
them with ``fail_reason: driver_died`` and re-queues its params with the same seed; a
driver that was interrupted (Ctrl-C, SIGTERM) re-queues the trials it cancelled
(``interrupted``) itself.

The budget counts finished trials (complete, pruned, failed) except those failed with a
reason in :data:`REQUEUED_REASONS`: their params run again as a new trial, which counts.
A study is resumed only with the search space its trials were sampled from
(:func:`~clonesweep.orchestrator.study.compat.check_resume_compatible`).
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from clonesweep.orchestrator._optuna import running_trial
from clonesweep.orchestrator.records import FAIL_REASON, SEED, failure_attributes
from clonesweep.trials import FailReason

__all__ = ["BUDGET_ATTR", "REQUEUED_REASONS", "counted",
           "fail_and_requeue", "recover_stale", "requeued_seed"]

#: Fail reasons that stand for "the driver stopped", not for the trial: re-queued, not counted.
REQUEUED_REASONS = tuple(r for r in FailReason if r.requeued)
#: The study attribute holding the budget the last driver ran to (``--add-trials`` extends it).
BUDGET_ATTR = "budget"
_REQUEUED_FROM = "requeued_from"


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` counts against the budget."""
    S = optuna.trial.TrialState
    if trial.state in (S.COMPLETE, S.PRUNED):
        return True
    return (trial.state is S.FAIL
            and trial.user_attrs.get(FAIL_REASON) not in REQUEUED_REASONS)


def requeued_seed(trial: optuna.trial.Trial) -> int | None:
    """The seed a re-queued trial must keep (None for any other trial)."""
    seed = trial.user_attrs.get(SEED) if _REQUEUED_FROM in trial.user_attrs else None
    return int(seed) if seed is not None else None


def fail_and_requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial | optuna.trial.Trial,
                     reason: FailReason, message: str) -> None:
    """Enqueue ``trial``'s params again (same seed), then fail it with ``reason``.

    Enqueueing first and skipping a number already re-queued makes this safe to repeat after
    a crash between the two writes.
    """
    number = trial.number
    params = dict(trial.params)
    attrs = study.get_trials(deepcopy=False)[number].user_attrs  # the stored ones
    already = any(t.user_attrs.get(_REQUEUED_FROM) == number
                  for t in study.get_trials(deepcopy=False))
    if not already:
        user_attrs: dict[str, Any] = {_REQUEUED_FROM: number}
        if SEED in attrs:
            user_attrs[SEED] = attrs[SEED]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # enqueue_trial is experimental in some versions
            study.enqueue_trial(params, user_attrs=user_attrs)
    live = running_trial(study, trial)
    for key, value in failure_attributes(reason, message).items():
        live.set_user_attr(key, value)
    study.tell(live, state=optuna.trial.TrialState.FAIL)


def recover_stale(study: optuna.Study, previous: dict[str, Any] | None) -> list[int]:
    """Fail and re-queue every RUNNING trial (call only while holding the lease); returns
    their numbers."""
    who = (f"pid {previous.get('pid')} on {previous.get('host')}" if previous
           else "an earlier driver")
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in stale:
        fail_and_requeue(study, trial, FailReason.DRIVER_DIED,
                         f"the driver running it ({who}) stopped; its params were re-queued")
    return [t.number for t in stale]
