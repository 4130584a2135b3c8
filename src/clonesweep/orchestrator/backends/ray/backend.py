"""The Ray backend: one long-lived worker actor per parallel slot, and a pruning broker.

Each worker actor (:mod:`clonesweep.orchestrator.backends.ray.actors`) imports Keras once (its
``__init__`` builds a :class:`~clonesweep.workers.runner.TrialRunner`)
and then runs trial after trial.
Per-epoch values reach the driver through the broker, a small async actor: a worker's
``report`` call waits there until the driver, the only writer to the study, has decided
whether to prune. The driver long-polls the broker with ``drain`` so a report wakes the
sweep loop at once.

Starting Ray, the job and the actors is :mod:`clonesweep.orchestrator.backends.ray.startup`;
this module is a trial's way through a slot (dispatch, poll, failures, timeouts). About 330
lines, past the usual 300: a running trial's state (``_Running``, the slot it holds, what was
shipped to that slot) is changed by dispatch, finish, the failure mapping and the node-loss
and timeout checks together, and they are read together when one changes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from clonesweep.errors import SweepFailed
from clonesweep.orchestrator.backends.ray._ray import (
    actor_init_failed,
    never_ran,
    start_failure,
    stop_monitor,
)
from clonesweep.orchestrator.backends.ray.actors import _WorkerActor
from clonesweep.orchestrator.backends.ray.reaper import Reaper
from clonesweep.orchestrator.backends.ray.slots import SlotPool, first_line, fit_slots
from clonesweep.orchestrator.backends.ray.startup import (
    data_by_reference,
    stamped,
    start_actors,
    start_broker,
    start_ray,
)
from clonesweep.spec.model import ResourcesSpec
from clonesweep.trials import FailReason, Intermediate, PackedGroup, TrialResult, TrialSpec
from clonesweep.workers.runner import WorkerJob

__all__ = ["RayBackend"]

log = logging.getLogger(__name__)

# How long a worker may overrun trial_timeout (it checks the deadline itself after each
# epoch) before the driver kills it: covers a hang inside an epoch.
_KILL_GRACE_S = 30.0
_DRAIN_WAIT_S = 1.0


@dataclass
class _Running:
    spec: TrialSpec
    slot: int
    started: float
    killed_for_timeout: bool = False
    fused: Any = None  # the FusedGroup, for ensemble members (submit_fused)
    packed: PackedGroup | None = None  # packed trials (submit_packed): one result each

    @property
    def group(self) -> Any:
        """What ``_waiting`` holds next to the spec: a FusedGroup, a PackedGroup or None."""
        return self.packed if self.packed is not None else self.fused

    def each(self, result: TrialResult) -> list[TrialResult]:
        """``result`` (a failure of the whole run) for each trial it stands for."""
        if self.packed is None:
            return [result]
        return [dataclasses.replace(result, number=t.number, attempt=t.attempt)
                for t in self.packed.trials]


class RayBackend:
    """Runs trials on Ray worker actors.

    Args:
        address: A Ray cluster address (``auto``, ``host:port``, ``ray://...``); None starts
            an embedded local Ray (or reuses one already initialized in this process; Ray
            itself honours ``RAY_ADDRESS``).
        resources: CPUs and (fractional) GPUs reserved by each worker actor.
        keras_backend: ``KERAS_BACKEND`` for the workers, set before they import Keras,
            unless the job names its own (``WorkerJob.keras_backend``).
        trial_timeout: Seconds after which a trial that does not return is killed.
        resource_wait: Seconds trials may wait while no worker slot can be placed (nodes
            lost, too few resources left) before :meth:`poll` raises SweepFailed; see
            :mod:`clonesweep.orchestrator.backends.ray.slots`.

    A submitted trial waits in the backend until a worker slot is live and idle, then runs
    there; a slot whose worker died (or whose node left) takes no trial until its actor is
    back. A trial whose node is lost fails as ``worker_died`` at once, so the driver's
    retry runs on another slot.
    """

    #: The actor class each slot runs: ``__init__(job, name)``, ``where()``, ``run(spec,
    #: broker) -> TrialResult``, ``best_model(number)`` (benchmarks swap in a trivial one).
    worker_class: type = _WorkerActor

    def __init__(self, *, address: str | None = None, resources: ResourcesSpec | None = None,
                 keras_backend: str | None = None, trial_timeout: float | None = None,
                 resource_wait: float = 300.0) -> None:
        self._address = address
        self._resources = resources or ResourcesSpec()
        self._default_backend = keras_backend or os.environ.get("KERAS_BACKEND", "tensorflow")
        self._keras_backend = self._default_backend
        self._timeout = trial_timeout
        self._resource_wait = resource_wait
        self._owns_ray = False
        self._reaper = Reaper()
        self._actors: list[Any] = []
        self._pool: SlotPool | None = None
        # (spec, FusedGroup or PackedGroup or None)
        self._waiting: list[tuple[TrialSpec, Any]] = []
        self._failed_now: list[TrialResult] = []  # failed without running, for poll()
        self._running: dict[Any, _Running] = {}
        self._broker: Any = None
        self._drain_ref: Any = None
        self._best_slot: dict[int, int] = {}
        # Structural search: the structure keys each slot's worker holds, so that a
        # structure's config JSON is shipped once per worker (again after a restart).
        self._shipped: dict[int, set[str]] = {}
        self._member_slot: dict[int, int] = {}  # fused members -> the slot that trained them
        self._data_ref: Any = None  # ux: in-memory data in the object store

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, job: WorkerJob, slots: int) -> None:
        # A job may ask for its own backend (fused ensembles on JAX): Keras fixes its
        # backend per process, so the workers are started with it.
        self._keras_backend = job.keras_backend or self._default_backend
        started = start_ray(self._address, self._keras_backend, self._resources, slots,
                            self._reaper)
        self._owns_ray = started.owns_ray
        try:
            slots = fit_slots(self._resources, slots)
        except SweepFailed:
            self.shutdown()
            raise
        job = stamped(job, self._keras_backend, self._resources)
        job, self._data_ref = data_by_reference(job)  # the ref is held while workers run
        self._actors = start_actors(self.worker_class, job, slots, self._resources, started)
        self._pool = SlotPool(self._actors, self._resources, self._resource_wait)
        self._broker = start_broker(started)
        self._drain_ref = self._broker.drain.remote(_DRAIN_WAIT_S)

    def shutdown(self) -> None:
        import ray

        if not ray.is_initialized():
            self._reaper.close()
            return
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        if self._broker is not None:
            ray.kill(self._broker, no_restart=True)
        self._actors, self._running, self._broker, self._pool = [], {}, None, None
        self._waiting, self._failed_now = [], []
        self._data_ref = None  # ux
        if self._owns_ray:
            stop_monitor()
            ray.shutdown()
            self._owns_ray = False
        self._reaper.close()

    # -- trials ---------------------------------------------------------------------------
    def free_slots(self) -> int:
        """Room for new trials: the slots that run trials now or will once placed, less the
        trials they hold or that wait. With no slot left at all (every node with room lost)
        one trial may still wait, so the sweep goes on and the resource wait can run out."""
        if self._pool is None:
            return 0
        usable = self._pool.usable()
        held = len(self._running) + len(self._waiting)
        if usable == 0:
            return 0 if held else 1
        return max(0, usable - held)

    def submit(self, spec: TrialSpec) -> None:
        """Run ``spec`` on an idle live slot now, or as soon as one is (never refuses)."""
        self._waiting.append((spec, None))
        self._dispatch()

    def poll(self, timeout: float) -> list[Intermediate | TrialResult]:
        import ray

        if self._pool is None:
            raise RuntimeError("poll() called before start()")
        self._kill_overdue()
        events: list[Intermediate | TrialResult] = [*self._lost_trials()]
        self._dispatch()
        # SweepFailed once trials waited sweep.resource_wait with no slot able to run.
        self._pool.check_starved(bool(self._waiting))
        events.extend(self._failed_now)
        self._failed_now = []
        probes = self._pool.probes()
        refs = [*self._running, *probes, self._drain_ref]
        ready, _ = ray.wait(refs, num_returns=1, timeout=0 if events else timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            if ref is self._drain_ref:
                events.extend(ray.get(ref))
                self._drain_ref = self._broker.drain.remote(_DRAIN_WAIT_S)
            elif ref in probes:
                self._pool.answered(probes[ref], ref)
                self._shipped.pop(probes[ref], None)  # a restarted worker holds no structure
            else:
                events.extend(self._finish(ref))
        self._dispatch()
        events.extend(self._failed_now)
        self._failed_now = []
        return events

    def _dispatch(self) -> None:
        """Send waiting trials, oldest first, to idle live slots. A trial meeting a broken
        slot (its worker cannot start) fails at once, for the next poll to return."""
        assert self._pool is not None
        while self._waiting and (index := self._pool.idle()) is not None:
            spec, group = self._waiting.pop(0)
            slot = self._pool.slots[index]
            packed = group if isinstance(group, PackedGroup) else None
            fused = None if packed is not None else group
            run = _Running(spec, index, time.monotonic(), fused=fused, packed=packed)
            if slot.broken is not None:
                self._failed_now.extend(run.each(TrialResult.failed(spec, *slot.broken)))
                continue
            slot.busy = True
            if packed is not None:
                ref = slot.actor.run_packed.remote(packed, self._broker)
            elif fused is not None:
                ref = slot.actor.run_fused.remote(fused)
                self._member_slot.update({m.number: index for m in fused.members})
            else:
                ref = slot.actor.run.remote(self._ship_once(spec, index), self._broker)
            self._running[ref] = run

    def _lost_trials(self) -> list[TrialResult]:
        """Fail the trials on slots whose node left the cluster as ``worker_died`` now, so
        the driver retries them on a live slot, instead of when Ray gives up on them."""
        import ray

        assert self._pool is not None
        hit = set(self._pool.check_nodes())
        lost = []
        for ref, run in list(self._running.items()):
            if run.slot in hit and not ray.wait([ref], timeout=0)[0]:
                del self._running[ref]
                slot = self._pool.slots[run.slot]
                slot.busy = False
                self._shipped.pop(run.slot, None)
                lost.extend(run.each(TrialResult.failed(
                    run.spec, FailReason.WORKER_DIED,
                    f"{slot.name}'s node {str(slot.node)[:12]} left the Ray cluster")))
        return lost

    def _ship_once(self, spec: TrialSpec, slot: int) -> TrialSpec:
        """Drop the structure's JSON from ``spec`` if the slot's worker already holds it."""
        if spec.structure is None:
            return spec
        held = self._shipped.setdefault(slot, set())
        if spec.structure in held:
            return dataclasses.replace(spec, structure_config_json=None)
        held.add(spec.structure)
        return spec

    def _finish(self, ref: Any) -> list[TrialResult]:
        import ray
        from ray import exceptions as rex

        assert self._pool is not None
        run = self._running.pop(ref)
        self._pool.slots[run.slot].busy = False
        try:
            got: TrialResult | list[TrialResult] = ray.get(ref)
        except rex.RayError as exc:
            if not isinstance(exc, rex.RayTaskError):  # the worker itself is in doubt
                self._pool.down(run.slot)
                self._shipped.pop(run.slot, None)  # a restarted worker holds no structure
            if never_ran(exc) and not run.killed_for_timeout:
                self._waiting.insert(0, (run.spec, run.group))  # not an attempt: send again
                return []
            return run.each(self._failure(run, exc))
        results = got if isinstance(got, list) else [got]
        for result in results:
            if result.reason is FailReason.WORKER_DIED:  # e.g. restarted while idle
                self._shipped.pop(run.slot, None)
            if result.reason is None and result.state.value == "complete":
                self._best_slot[result.number] = run.slot
        return results

    def _failure(self, run: _Running, exc: BaseException) -> TrialResult:
        """The result for a trial whose Ray task raised ``exc``."""
        from ray import exceptions as rex

        if isinstance(exc, rex.OutOfMemoryError):
            return TrialResult.failed(run.spec, FailReason.OOM, first_line(exc))
        if isinstance(exc, rex.RayActorError):
            if run.killed_for_timeout:
                return TrialResult.failed(run.spec, FailReason.TIMEOUT,
                                          f"killed after {self._timeout:g} s + grace")
            if actor_init_failed(exc):  # __init__ raised: a retry cannot help
                return TrialResult.failed(run.spec, FailReason.USER_ERROR,
                                          f"worker failed to start: {start_failure(exc)}")
            return TrialResult.failed(run.spec, FailReason.WORKER_DIED, first_line(exc))
        if isinstance(exc, rex.RayTaskError):
            return TrialResult.failed(run.spec, FailReason.USER_ERROR, str(exc)[-2000:])
        return TrialResult.failed(run.spec, FailReason.WORKER_DIED, first_line(exc))

    def _kill_overdue(self) -> None:
        import ray

        if self._timeout is None or self._pool is None:
            return
        limit = self._timeout + max(_KILL_GRACE_S, 0.1 * self._timeout)
        now = time.monotonic()
        for run in self._running.values():
            if not run.killed_for_timeout and now - run.started > limit:
                run.killed_for_timeout = True
                ray.kill(self._pool.slots[run.slot].actor, no_restart=False)

    def answer(self, report: Intermediate, prune: bool) -> None:
        self._broker.decide.remote(report.number, report.step, prune)

    def fetch_model(self, number: int) -> bytes | None:
        import ray

        slot = self._best_slot.get(number)
        if slot is None or self._pool is None:
            return None
        try:
            data: bytes | None = ray.get(self._pool.slots[slot].actor.best_model.remote(number))
        except ray.exceptions.RayError:
            return None
        return data

    # -- ensemble members (clonesweep.orchestrator.ensemble.run) -------------------------------
    def submit_fused(self, group: Any) -> None:
        """Run a :class:`~clonesweep.workers.member.FusedGroup` on one worker; it yields one
        result numbered ``group.number``. Start the backend with ``keep_members=True``."""
        self._waiting.append((group.as_spec(), group))
        self._dispatch()

    # -- packed trials (clonesweep.orchestrator.packing) ------------------------------------
    def submit_packed(self, group: PackedGroup) -> None:
        """Run a :class:`~clonesweep.trials.PackedGroup` on one worker (one slot); it yields
        one result per trial, and each trial reports its epochs under its own number. The
        workers must run Keras on JAX (``keras_backend="jax"``), else each trial of the group
        trains alone there."""
        self._waiting.append((group.trials[0], group))
        self._dispatch()

    def fetch_member(self, number: int) -> Any:
        """The :class:`~clonesweep.workers.member.MemberOutput` of a completed member, once."""
        import ray

        slot = self._member_slot.pop(number, self._best_slot.get(number))
        if slot is None or self._pool is None:
            return None
        try:
            return ray.get(self._pool.slots[slot].actor.member_output.remote(number))
        except ray.exceptions.RayError:
            return None
