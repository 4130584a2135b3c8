"""An ensemble's members: their state, their seeds, and their policy for the one loop.

Member ``i`` is trial ``i`` of the ensemble's own study, with member seed
``derive_seed(ensemble_seed, "member", i)``. :class:`MemberPolicy` hands the members (alone or
in fused groups) to :class:`~clonesweep.orchestrator.loop.Loop`, which retries, collects and
tells them exactly as it does a sweep's trials; each member's trial stores the attributes
of :func:`~clonesweep.orchestrator.records.trial_attributes`, plus ``fused``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import optuna

from clonesweep.orchestrator import _optuna
from clonesweep.orchestrator._optuna import create_running_trial
from clonesweep.orchestrator.loop import FusedBackend, Work
from clonesweep.orchestrator.records import (
    failure_attributes,
    member_attributes,
    trial_attributes,
)
from clonesweep.orchestrator.study.storage import finish_trials, set_user_attrs
from clonesweep.trials import FailReason, Intermediate, TrialResult, TrialSpec, TrialState
from clonesweep.workers.member import FusedGroup, MemberOutput
from clonesweep.workers.seeding import derive_seed

if TYPE_CHECKING:
    from clonesweep.orchestrator.trackers import Trackers

__all__ = ["Member", "MemberBackend", "MemberPolicy", "asker", "member_seed"]


class MemberBackend(FusedBackend, Protocol):
    """A :class:`~clonesweep.orchestrator.backends.base.Backend` that also keeps members.

    Started with ``WorkerJob(keep_members=True)``. ``submit_fused`` takes a free slot like
    ``submit`` and yields one result numbered ``group.number``; ``fetch_member(number)``
    returns a completed member's :class:`~clonesweep.workers.member.MemberOutput` once
    (after its own result, or its group's, has been polled), else None.
    """

    def fetch_member(self, number: int) -> MemberOutput | None: ...


@dataclass
class Member:
    """One member's state from ask to tell (and what it left)."""

    index: int
    trial: optuna.trial.Trial | None  # None until asked (after its work was submitted)
    spec: TrialSpec
    result: TrialResult | None = None
    output: MemberOutput | None = None

    @property
    def number(self) -> int:
        """The member's trial number in the ensemble study (its index until asked)."""
        return self.trial.number if self.trial is not None else self.spec.number


def member_seed(ensemble_seed: int, index: int) -> int:
    """Member ``index``'s root seed: ``derive_seed(ensemble_seed, "member", index)``."""
    return derive_seed(ensemble_seed, "member", index)


def asker(study: optuna.Study, params: dict[str, Any], seed: int,
           source: str) -> Callable[[Member], None]:
    """Records a member as a running trial of the ensemble study (sets ``member.trial``).

    The trial is created with its params and attributes in one storage write (Optuna's
    ``create_new_trial`` with a template): nothing is sampled, so ``study.ask``'s sampler calls
    and its one write per param and per attribute are not needed (on SQLite ~10 ms of the
    driver's CPU per member instead of ~28).
    """
    primitives = {k: v for k, v in params.items()
                  if v is None or isinstance(v, (bool, int, float, str))}
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        k: optuna.distributions.CategoricalDistribution([v]) for k, v in primitives.items()}

    def ask(member: Member) -> None:
        template = optuna.trial.FrozenTrial(
            number=-1, state=optuna.trial.TrialState.RUNNING, value=None,
            datetime_start=datetime.datetime.now(), datetime_complete=None,
            params=primitives, distributions=dists, system_attrs={}, intermediate_values={},
            user_attrs=member_attributes(member.index, member.spec.seed, seed, params, source),
            trial_id=-1)
        member.trial = create_running_trial(study, template)

    return ask


class MemberPolicy:
    """An ensemble's policy for the one loop (:mod:`clonesweep.orchestrator.loop`).

    What to ask: the members (or fused groups of them) in order, each once; their trials are
    created right after the first wave is submitted, so the asks overlap the workers' first
    training. Nothing prunes a member. A member's (or a group's) result is written straight
    to the storage, a fused group's members in one transaction (the ensemble's sampler
    learns nothing from a member; see
    :func:`~clonesweep.orchestrator.study.storage.finish_trials`).
    """

    def __init__(self, study: optuna.Study, backend: MemberBackend, members: list[Member],
                 groups: int, ask: Callable[[Member], None],
                 on_member: Callable[[Member, bool], None],
                 trackers: Trackers | None = None) -> None:
        self.study, self.backend, self.members = study, backend, members
        self.trackers = trackers  # MLflow / W&B, told after the study (trackers.py)
        self.ask_member, self.on_member = ask, on_member
        self.by_number = {m.spec.number: m for m in members}
        self.todo: list[Work]
        if groups:
            size = -(-len(members) // groups)
            self.todo = [FusedGroup(chunk[0].spec.number, tuple(m.spec for m in chunk))
                         for chunk in (members[i:i + size]
                                       for i in range(0, len(members), size))]
        else:
            self.todo = [m.spec for m in members]
        self.asked = False
        self.group_notes: list[str] = []
        # Members whose outputs were fetched (once per member) but not yet written.
        self._collected: dict[int, list[tuple[Member, TrialResult, MemberOutput | None]]] = {}

    def ask(self, running: int) -> Work | None:
        return self.todo.pop(0) if self.todo else None

    def after_fill(self) -> None:
        if not self.asked:  # once, after the first wave, before any result is polled
            for member in self.members:
                self.ask_member(member)
            self.asked = True

    def report(self, event: Intermediate) -> bool:
        return False  # members are never pruned

    def retried(self, again: Work, result: TrialResult) -> None:
        for spec in (again.members if isinstance(again, FusedGroup) else (again,)):
            self.by_number[spec.number].spec = spec
            self.on_member(self.by_number[spec.number], True)

    def tick(self, running: int) -> None:
        pass

    def storage_check(self) -> None:
        self.study.user_attrs  # noqa: B018  (a read: raises while the storage is away)

    def tell(self, work: Work, result: TrialResult) -> None:
        if work.number not in self._collected:
            self._collected[work.number] = self._collect(work, result)
        told = self._collected[work.number]
        rows = []
        for member, own, out in told:
            member.result, member.output = own, out
            assert member.trial is not None  # asked before the first poll
            ok = own.state is TrialState.COMPLETE and own.value is not None
            rows.append((member.trial, {**trial_attributes(own),
                                        "fused": bool(out is not None and out.fused)},
                         optuna.trial.TrialState.COMPLETE if ok
                         else optuna.trial.TrialState.FAIL,
                         own.value if ok else None))
        finish_trials(self.study, rows)
        del self._collected[work.number]
        if self.trackers is not None:  # after the study: they never hold up its record
            storage = _optuna.storage_of(self.study)
            for member, own, _ in told:
                assert member.trial is not None
                frozen = storage.get_trial(_optuna.trial_id(member.trial))
                self.trackers.told(self.study, frozen, own, member=True)
        for member, _, _ in told:
            self.on_member(member, False)

    def _collect(self, work: Work, result: TrialResult,
                 ) -> list[tuple[Member, TrialResult, MemberOutput | None]]:
        """Each member's own result and kept output (fetched from its worker once)."""
        specs = work.members if isinstance(work, FusedGroup) else (work,)
        told = []
        for spec in specs:
            out = (self.backend.fetch_member(spec.number)
                   if result.state is TrialState.COMPLETE else None)
            own = result
            if isinstance(work, FusedGroup):
                own = out.result if out is not None and out.result is not None else \
                    TrialResult.failed(spec, result.reason or FailReason.WORKER_DIED,
                                       result.message or "the fused group failed")
            if own.state is TrialState.COMPLETE and out is None:
                own = dataclasses.replace(
                    own, state=TrialState.FAIL, reason=FailReason.WORKER_DIED, value=None,
                    message="the member's model was lost with its worker")
            told.append((self.by_number[spec.number], own, out))
        kept = [out for _, _, out in told if out is not None]
        if isinstance(work, FusedGroup) and kept and not any(out.fused for out in kept):
            # The worker found what the config alone did not show: it trained them one by one.
            self.group_notes.append(result.message)
        return told

    def requeue(self, work: Work, result: TrialResult) -> None:
        self.tell(work, result)  # an ensemble is not resumed: the failure is its record

    def abandon(self, running: list[Work], cause: BaseException | None) -> None:
        """Record every member still running (or waiting for a slot) as interrupted."""
        for member in self.members:
            if member.result is None and member.trial is not None:
                try:
                    set_user_attrs(member.trial, failure_attributes(
                        FailReason.INTERRUPTED, "the ensemble was interrupted"))
                    self.study.tell(member.trial, state=optuna.trial.TrialState.FAIL)
                except Exception:  # storage gone too: nothing more can be recorded
                    pass
