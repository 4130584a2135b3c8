"""The execution-backend contract, and the in-process backend that tests the loop without Ray.

A backend runs trials on workers. The sweep loop drives it like this::

    backend.start(job, slots)            # once: workers start importing Keras
    while ...:
        backend.submit(spec)             # at most free_slots() at a time
        for event in backend.poll(0.5):  # Intermediate -> answer() it; TrialResult -> done
            ...
    backend.fetch_model(number)          # .keras bytes of a finished trial, if kept
    backend.shutdown()                   # always; idempotent

Ownership: between ``submit`` and the :class:`~clonesweep.trials.TrialResult` that ends it, a
trial belongs to the backend; every submitted spec yields exactly one result (a worker that
dies yields ``FAIL/worker_died``). Every :class:`~clonesweep.trials.Intermediate` must be
answered, or the worker that sent it waits. Backends are driven from one thread.
"""

from __future__ import annotations

import queue
import socket
import threading
import traceback
from typing import Protocol

from clonesweep.trials import FailReason, Intermediate, TrialResult, TrialSpec
from clonesweep.workers.member import FusedGroup, MemberOutput
from clonesweep.workers.runner import TrialRunner, WorkerJob

__all__ = ["Backend", "Event", "InProcessBackend"]

Event = Intermediate | TrialResult


class Backend(Protocol):
    """Where trials run. See the module docstring for the call order."""

    def start(self, job: WorkerJob, slots: int) -> None: ...

    def free_slots(self) -> int: ...

    def submit(self, spec: TrialSpec) -> None: ...

    def poll(self, timeout: float) -> list[Event]: ...

    def answer(self, report: Intermediate, prune: bool) -> None: ...

    def fetch_model(self, number: int) -> bytes | None: ...

    def shutdown(self) -> None: ...


class _QueueReporter:
    def __init__(self, number: int, events: queue.Queue[Event],
                 answers: dict[tuple[int, int], queue.Queue[bool]], wait: bool = True) -> None:
        self._number, self._events, self._answers = number, events, answers
        self._wait = wait

    def report(self, step: int, value: float) -> bool:
        box: queue.Queue[bool] = queue.Queue(maxsize=1)
        self._answers[(self._number, step)] = box
        self._events.put(Intermediate(self._number, step, value))
        # The driver still answers (and the box is dropped then); nothing can prune.
        return box.get() if self._wait else False


class InProcessBackend:
    """Runs trials one at a time in a background thread of the driver's process.

    Keras keeps global state (``clear_session``), so trials never overlap here: ``slots``
    submissions are accepted and queued, which keeps the loop's behaviour the same as with
    parallel workers. Meant for tests and debugging; use the Ray backend for real sweeps.
    """

    def __init__(self) -> None:
        self._slots = 0
        self._in_flight = 0
        self._events: queue.Queue[Event] = queue.Queue()
        self._answers: dict[tuple[int, int], queue.Queue[bool]] = {}
        self._todo: queue.Queue[TrialSpec | FusedGroup | None] = queue.Queue()
        self._runner: TrialRunner | None = None
        self._thread: threading.Thread | None = None

    def start(self, job: WorkerJob, slots: int) -> None:
        self._slots = slots
        self._thread = threading.Thread(target=self._work, args=(job,), daemon=True,
                                        name="clonesweep-inprocess")
        self._thread.start()

    def _work(self, job: WorkerJob) -> None:
        try:
            runner: TrialRunner | None = TrialRunner(job, worker="inprocess-0",
                                                     node=socket.gethostname())
            broken = ""
        except Exception as exc:  # a module in model.imports failed, for one
            runner, broken = None, f"worker failed to start: {type(exc).__name__}: {exc}"
        self._runner = runner
        while (spec := self._todo.get()) is not None:
            try:
                self._events.put(self._one(runner, broken, spec))
            except Exception as exc:
                # Reported, as a Ray worker's call that raised is (RayTaskError): a thread
                # ended by it would leave the driver waiting for a result forever.
                failed = spec.as_spec() if isinstance(spec, FusedGroup) else spec
                where = "".join(traceback.format_tb(exc.__traceback__)[-3:])
                self._events.put(TrialResult.failed(
                    failed, FailReason.USER_ERROR, f"{type(exc).__name__}: {exc}\n{where}"))

    def _one(self, runner: TrialRunner | None, broken: str,
             spec: TrialSpec | FusedGroup) -> TrialResult:
        if isinstance(spec, FusedGroup):  # ensembles: see submit_fused
            return runner.run_fused(spec) if runner is not None else \
                TrialResult.failed(spec.as_spec(), FailReason.USER_ERROR, broken)
        if runner is None:
            return TrialResult.failed(spec, FailReason.USER_ERROR, broken)
        reporter = _QueueReporter(spec.number, self._events, self._answers,
                                  runner.job.await_pruning)
        return runner.run(spec, reporter)

    def free_slots(self) -> int:
        return self._slots - self._in_flight

    def submit(self, spec: TrialSpec) -> None:
        if self.free_slots() <= 0:
            raise RuntimeError("submit() called with no free slot")
        self._in_flight += 1
        self._todo.put(spec)

    def poll(self, timeout: float) -> list[Event]:
        events: list[Event] = []
        try:
            events.append(self._events.get(timeout=timeout))
            while True:
                events.append(self._events.get_nowait())
        except queue.Empty:
            pass
        self._in_flight -= sum(isinstance(e, TrialResult) for e in events)
        return events

    def answer(self, report: Intermediate, prune: bool) -> None:
        self._answers.pop((report.number, report.step)).put(prune)

    def fetch_model(self, number: int) -> bytes | None:
        return self._runner.best_model(number) if self._runner else None

    def submit_fused(self, group: FusedGroup) -> None:
        """Queue a fused group of ensemble members; it yields one result, ``group.number``."""
        if self.free_slots() <= 0:
            raise RuntimeError("submit_fused() called with no free slot")
        self._in_flight += 1
        self._todo.put(group)

    def fetch_member(self, number: int) -> MemberOutput | None:
        """A completed member's kept output (``WorkerJob.keep_members``), once."""
        output: MemberOutput | None = (self._runner.member_output(number)
                                       if self._runner else None)
        return output

    def shutdown(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._todo.put(None)
            self._thread.join(timeout=60)
        self._thread = None
