"""The one loop of sweeps and ensembles: ask -> submit -> collect -> tell.

:class:`Loop` owns what runs on the backend and how a run ends; a :class:`Policy` owns the
study: what to ask next (and when nothing is left), what an intermediate value decides, how a
finished trial is told. A sweep's policy (:mod:`clonesweep.orchestrator.sweep`) asks Optuna
for trials up to its budget; an ensemble's (:mod:`clonesweep.orchestrator.ensemble.run`)
hands out its members, alone or in fused groups. Both share everything below.

One pass of the loop::

    lease.beat()                    # the sweep's lease, kept fresh (storage errors wait)
    outbox.flush()                  # results held while the storage was away, in order
    while a slot is free:           # nothing new while results are held or after a signal
        work = policy.ask(running)  # None: nothing to ask now
        backend.submit(work)
    policy.after_fill()
    for event in backend.poll(0.5):
        Intermediate -> backend.answer(event, policy.report(event))   # prune?
        TrialResult  -> retry the same work (a retryable reason, attempts left),
                        or tell the policy through the outbox
    policy.tick(running)

Retries: only a :attr:`~clonesweep.trials.FailReason.retryable` reason, at most ``retries``
times per work item, never while draining after a signal (the policy re-queues it for the next
run instead). The loop ends when nothing runs and nothing waits for the storage. A signal
drains (no new work) and, once :attr:`Interrupts.cancel_now`, cancels: the policy abandons
what still runs and the loop raises :class:`KeyboardInterrupt`; any other exception also
abandons what runs first.

Each running trial's state is in one place: the loop keeps the work item a worker runs
(``inflight``, keyed by number); the policy keeps the study's side of it (the Optuna trial).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

from clonesweep.orchestrator.backends.base import Backend
from clonesweep.orchestrator.signals import Interrupts
from clonesweep.orchestrator.study.lease import Lease
from clonesweep.orchestrator.study.outbox import STORAGE_ERRORS, Outbox
from clonesweep.trials import Intermediate, PackedGroup, TrialResult, TrialSpec, TrialState
from clonesweep.workers.member import FusedGroup

__all__ = ["AskedFailed", "FusedBackend", "Loop", "PackedBackend", "Policy", "Work"]

#: What a worker runs: one trial, or a fused group of ensemble members (one result).
Work = TrialSpec | FusedGroup


@dataclass(frozen=True)
class AskedFailed:
    """A trial that failed on the driver while it was asked (its structure does not build):
    told at once, never submitted."""

    work: TrialSpec
    result: TrialResult


class Policy(Protocol):
    """What the loop asks of a sweep or an ensemble. Called from the loop's thread only.

    Call order per work item: ``ask`` -> (``report``)* -> ``retried``* -> exactly one of
    ``tell`` (through the outbox: it may run later, and again after a storage error, so it
    must be safe to repeat), ``requeue`` (through the outbox) or ``abandon``.
    """

    def ask(self, running: int) -> Work | PackedGroup | AskedFailed | None:
        """The next work item, a trial that failed while asked, or None: nothing now (the
        budget is reached, the sweep stops, every member was handed out). A
        :class:`~clonesweep.trials.PackedGroup` runs on one slot; the loop then holds each
        of its trials as its own work item (its results, reports and retries are each
        trial's own; a retried trial runs alone)."""
        ...

    def after_fill(self) -> None:
        """After each round of asks, before the loop waits on the backend."""
        ...

    def report(self, event: Intermediate) -> bool:
        """Record a per-epoch value; True: prune the trial."""
        ...

    def retried(self, again: Work, result: TrialResult) -> None:
        """``result`` failed and ``again`` (its next attempt) was submitted."""
        ...

    def tell(self, work: Work, result: TrialResult) -> None:
        """Record the work's final result in the study."""
        ...

    def requeue(self, work: Work, result: TrialResult) -> None:
        """A retryable failure while draining: fail it as interrupted, run it next time."""
        ...

    def abandon(self, running: list[Work], cause: BaseException | None) -> None:
        """The loop stops with ``running`` unfinished (a signal, or ``cause``). Must not
        raise: the storage may be gone."""
        ...

    def tick(self, running: int) -> None:
        """Once per pass, after the poll."""
        ...

    def storage_check(self) -> None:
        """A read of the study: raises a storage error while the storage is away."""
        ...


class FusedBackend(Backend, Protocol):
    """A backend that also trains fused groups (ensembles); see
    :class:`~clonesweep.orchestrator.ensemble.members.MemberBackend`."""

    def submit_fused(self, group: FusedGroup) -> None: ...


class PackedBackend(Backend, Protocol):
    """A backend that also trains packed groups of sweep trials on one slot
    (:meth:`~clonesweep.orchestrator.backends.ray.backend.RayBackend.submit_packed`)."""

    def submit_packed(self, group: PackedGroup) -> None: ...


class Loop:
    """Drives one policy on one backend until its work is done (see the module docstring).

    Args:
        backend: Started already; the loop never starts or shuts it down.
        policy: The sweep's or the ensemble's.
        retries: Retries per work item of a retryable failure.
        outbox: Where tells wait while the storage is unreachable.
        interrupts: Entered by the caller; None: signals are not the loop's business.
        lease: Refreshed each pass; None: no lease (an ensemble).
    """

    def __init__(self, backend: Backend, policy: Policy, *, retries: int,
                 outbox: Outbox | None = None, interrupts: Interrupts | None = None,
                 lease: Lease | None = None) -> None:
        self.backend, self.policy, self.retries = backend, policy, retries
        self.outbox = outbox or Outbox()
        self.interrupts, self.lease = interrupts, lease
        self.inflight: dict[int, Work] = {}
        self.retried = 0

    @property
    def draining(self) -> bool:
        return self.interrupts is not None and self.interrupts.draining

    def run(self) -> None:
        """Run until nothing runs and nothing waits for the storage.

        Raises:
            KeyboardInterrupt: A signal came and what ran was abandoned.
            SweepFailed: The storage stayed away too long (the outbox), or the lease was
                taken over.
        """
        try:
            while True:
                if self.lease is not None:
                    with contextlib.suppress(*STORAGE_ERRORS):  # the lease waits for it
                        self.lease.beat()
                if self.interrupts is not None and self.interrupts.cancel_now:
                    break
                self.outbox.flush()
                self._fill()
                self.policy.after_fill()
                if not self.inflight and not self.outbox:
                    break
                for event in self.backend.poll(0.5):
                    if isinstance(event, Intermediate):
                        self.backend.answer(event, self._report(event))
                    else:
                        self._collect(event)
                self.policy.tick(len(self.inflight))
        except BaseException as exc:
            self._abandon(exc)
            raise
        if self.draining:
            self._abandon(None)
            raise KeyboardInterrupt

    def _fill(self) -> None:
        # Nothing new while results wait for the storage: the budget counts them once told.
        while not self.draining and not self.outbox and self.backend.free_slots() > 0:
            try:
                work = self.policy.ask(len(self.inflight))
            except STORAGE_ERRORS:
                # Keep the loop waiting (not ending short of its work) until the storage
                # answers: the outbox holds a read that succeeds once it is back.
                if not self.outbox:
                    self.outbox.put("the next trial", self.policy.storage_check)
                return
            if work is None:
                return
            if isinstance(work, AskedFailed):
                self._tell(work.work, work.result)
                continue
            if isinstance(work, PackedGroup):
                # Only a packing sweep policy hands out groups, on a PackedBackend.
                self.inflight.update({t.number: t for t in work.trials})
                packer: PackedBackend = self.backend  # type: ignore[assignment]
                packer.submit_packed(work)
                continue
            self.inflight[work.number] = work
            self._submit(work)

    def _submit(self, work: Work) -> None:
        if isinstance(work, FusedGroup):
            # Only an ensemble hands out groups, and it runs on a MemberBackend.
            backend: FusedBackend = self.backend  # type: ignore[assignment]
            backend.submit_fused(work)
        else:
            self.backend.submit(work)

    def _report(self, event: Intermediate) -> bool:
        if event.number not in self.inflight:
            return False  # a late report of a trial already told
        return self.policy.report(event)

    def _collect(self, result: TrialResult) -> None:
        work = self.inflight.pop(result.number)
        retryable = (result.state is TrialState.FAIL and result.reason is not None
                     and result.reason.retryable)
        if retryable and self.draining:  # no retry while draining: the next run's
            self.outbox.put(f"trial {result.number} (interrupted)",
                            lambda: self.policy.requeue(work, result))
            return
        if retryable and work.attempt < self.retries:
            again = work.retry()
            self.inflight[again.number] = again
            self.retried += 1
            self._submit(again)
            self.policy.retried(again, result)
            return
        self._tell(work, result)

    def _tell(self, work: Work, result: TrialResult) -> None:
        """Tell the study, now or, while the storage is unreachable, once it is back."""
        self.outbox.put(f"trial {result.number} ({result.state.value})",
                        lambda: self.policy.tell(work, result))

    def _abandon(self, cause: BaseException | None) -> None:
        running = list(self.inflight.values())
        self.inflight.clear()
        self.policy.abandon(running, cause)
