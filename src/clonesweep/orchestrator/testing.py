"""A scripted backend for testing the loop in milliseconds: no Keras, no Ray, no thread.

:class:`FakeBackend` keeps the backend contract
(:mod:`clonesweep.orchestrator.backends.base`: at most ``free_slots()`` submissions, one
result per submitted spec, every intermediate value answered) and the ensemble's
(``submit_fused``, ``fetch_member``), but what each trial does is scripted, per trial number
and attempt:

* :class:`Complete`: per-epoch values of the monitored metric are sent one by one as
  :class:`~clonesweep.trials.Intermediate` events (the next only after the driver answered;
  an answer of True ends the trial PRUNED), then the trial completes with its history;
* :class:`Fail`: the trial fails with a reason (``Fail(FailReason.WORKER_DIED)`` is a
  worker's death, as the Ray backend reports it);
* :class:`Hang`: the trial never ends (until :meth:`FakeBackend.shutdown`).

Each :meth:`FakeBackend.poll` advances every running trial by one event, and calls
``on_poll(backend)`` first, where a test can, for instance, send itself SIGINT. Example::

    backend = FakeBackend({0: Fail(FailReason.WORKER_DIED), 2: [Fail(FailReason.OOM),
                                                               Complete(value=0.9)]})
    outcome = run_sweep(spec, base_config, backend)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from clonesweep.orchestrator.backends.base import Event
from clonesweep.trials import (
    FailReason,
    Intermediate,
    Timings,
    TrialResult,
    TrialSpec,
    TrialState,
)
from clonesweep.workers.member import FusedGroup, MemberOutput
from clonesweep.workers.runner import WorkerJob

__all__ = ["Complete", "Fail", "FakeBackend", "Hang", "Outcome"]


@dataclass(frozen=True)
class Complete:
    """The trial trains: ``history[metric]`` is reported epoch by epoch, then it completes.

    Attributes:
        value: The objective's final value; its metric's history ends with it.
        metric: The monitored metric's name (the sweep file's objective).
        epochs: How many epochs; the metric's values rise linearly to ``value``.
    """

    value: float = 0.5
    metric: str = "val_accuracy"
    epochs: int = 2

    def history(self) -> dict[str, list[float]]:
        steps = [self.value * (i + 1) / self.epochs for i in range(self.epochs)]
        return {self.metric: steps, "loss": [1.0 - v / 2 for v in steps]}


@dataclass(frozen=True)
class Fail:
    """The trial fails with ``reason`` on its worker."""

    reason: FailReason
    message: str = "scripted failure"


@dataclass(frozen=True)
class Hang:
    """The trial never ends on its own."""


Outcome = Complete | Fail | Hang
#: Per trial number: one outcome for every attempt, or one per attempt (the last repeats).
Script = Mapping[int, Outcome | Sequence[Outcome]]


@dataclass
class _Running:
    spec: TrialSpec
    outcome: Outcome
    group: FusedGroup | None = None
    step: int = 0
    waiting: bool = False  # an Intermediate is unanswered
    prune: bool = False


@dataclass
class FakeBackend:
    """Runs scripted trials (see the module docstring); unscripted trials complete.

    Attributes:
        script: What each trial number does.
        on_poll: Called at the start of every poll, with this backend.
        started: The job and slots ``start`` was given.
        submitted: Every spec submitted, in order (retries included); groups as their specs.
        unfusable: Non-empty: a fused group's worker finds the members cannot be fused and
            trains them one by one (its result's message says why, as a real worker's does).
    """

    script: Script = field(default_factory=dict)
    on_poll: Callable[[FakeBackend], None] | None = None
    unfusable: str = ""
    started: tuple[WorkerJob, int] | None = None
    submitted: list[TrialSpec] = field(default_factory=list)
    shut_down: bool = False
    _running: dict[int, _Running] = field(default_factory=dict)
    _members: dict[int, MemberOutput] = field(default_factory=dict)

    def outcome(self, spec: TrialSpec) -> Outcome:
        scripted = self.script.get(spec.number, Complete())
        if isinstance(scripted, (Complete, Fail, Hang)):
            return scripted
        return scripted[min(spec.attempt, len(scripted) - 1)]

    # -- the backend contract ----------------------------------------------------------------
    def start(self, job: WorkerJob, slots: int) -> None:
        self.started = (job, slots)

    def free_slots(self) -> int:
        assert self.started is not None, "start() first"
        return self.started[1] - len(self._running)

    def submit(self, spec: TrialSpec) -> None:
        if self.free_slots() <= 0:
            raise RuntimeError("submit() called with no free slot")
        self.submitted.append(spec)
        self._running[spec.number] = _Running(spec, self.outcome(spec))

    def submit_fused(self, group: FusedGroup) -> None:
        """A group completes when every member's outcome is Complete; a member's Fail
        fails the whole group with that reason (as a group's worker dying would)."""
        if self.free_slots() <= 0:
            raise RuntimeError("submit_fused() called with no free slot")
        self.submitted.extend(group.members)
        outcomes = [self.outcome(m) for m in group.members]
        fails = [o for o in outcomes if not isinstance(o, Complete)]
        head = fails[0] if fails else Complete(epochs=0)
        self._running[group.number] = _Running(group.as_spec(), head, group=group)

    def poll(self, timeout: float) -> list[Event]:
        if self.on_poll is not None:
            self.on_poll(self)
        events: list[Event] = []
        for number, run in list(self._running.items()):
            event = self._advance(run)
            if event is None:
                continue
            events.append(event)
            if isinstance(event, TrialResult):
                del self._running[number]
        return events

    def answer(self, report: Intermediate, prune: bool) -> None:
        run = self._running[report.number]
        assert run.waiting and run.step == report.step + 1, "an answer nobody asked for"
        run.waiting, run.prune = False, prune

    def fetch_model(self, number: int) -> bytes | None:
        return b"fake keras model"

    def fetch_member(self, number: int) -> MemberOutput | None:
        return self._members.pop(number, None)

    def shutdown(self) -> None:
        self._running.clear()
        self.shut_down = True

    # -- what a worker would do --------------------------------------------------------------
    def _advance(self, run: _Running) -> Event | None:
        outcome, spec = run.outcome, run.spec
        if isinstance(outcome, Hang) or run.waiting:
            return None
        if isinstance(outcome, Fail):
            return TrialResult.failed(spec, outcome.reason, outcome.message)
        history = outcome.history()
        values = history[outcome.metric]
        if run.prune:
            cut = {k: v[:run.step] for k, v in history.items()}
            return self._result(spec, TrialState.PRUNED, None, cut)
        if run.group is None and run.step < len(values):
            run.step += 1
            run.waiting = True
            return Intermediate(spec.number, run.step - 1, values[run.step - 1])
        if run.group is not None:
            return self._group_done(run.group)
        self._members[spec.number] = _member_output(None)
        return self._result(spec, TrialState.COMPLETE, outcome.value, history)

    def _group_done(self, group: FusedGroup) -> TrialResult:
        fused = not self.unfusable
        for member in group.members:
            outcome = self.outcome(member)
            assert isinstance(outcome, Complete)
            own = self._result(member, TrialState.COMPLETE, outcome.value, outcome.history())
            self._members[member.number] = _member_output(own, fused)
        message = "trained fused" if fused else \
            f"fused training does not apply ({self.unfusable}); trained members separately"
        return TrialResult(group.number, TrialState.COMPLETE, attempt=group.attempt,
                           node="fake-node", worker="fake-0", message=message)

    @staticmethod
    def _result(spec: TrialSpec, state: TrialState, value: float | None,
                history: dict[str, list[float]]) -> TrialResult:
        return TrialResult(spec.number, state, value=value, history=history,
                           seeds={"root": spec.seed}, config_hash="fake", param_count=10,
                           timings=Timings(0.001, 0.002, 0.001), node="fake-node",
                           worker="fake-0", attempt=spec.attempt,
                           environment={"backend": "fake"}, data_fingerprint="fake",
                           engine="fake")


def _member_output(result: TrialResult | None, fused: bool = False) -> MemberOutput:
    return MemberOutput(np.zeros((2, 3), dtype="float32"), np.zeros(2, dtype="int64"),
                        b"fake keras model", result=result, fused=fused)
