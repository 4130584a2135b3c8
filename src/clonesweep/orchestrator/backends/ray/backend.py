"""The Ray backend: one long-lived worker actor per parallel slot, and a pruning broker.

Each worker actor (:mod:`clonesweep.orchestrator.backends.ray.actors`) imports Keras once (its
``__init__`` builds a :class:`~clonesweep.workers.runner.TrialRunner`)
and then runs trial after trial.
Per-epoch values reach the driver through the broker, a small async actor: a worker's
``report`` call waits there until the driver, the only writer to the study, has decided
whether to prune. The driver long-polls the broker with ``drain`` so a report wakes the
sweep loop at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from clonesweep.errors import SweepFailed
from clonesweep.orchestrator.backends.ray._ray import (
    actor_init_failed,
    loopback_node,
    loopback_only,
    never_ran,
    node_start_timed_out,
    preload_modules,
    start_failure,
    stop_monitor,
)
from clonesweep.orchestrator.backends.ray.actors import _Broker, _WorkerActor
from clonesweep.orchestrator.backends.ray.reaper import Reaper, children_of, kill_trees
from clonesweep.orchestrator.backends.ray.slots import (
    SlotPool,
    first_line,
    fit_slots,
    on_driver_node,
)
from clonesweep.spec.model import ResourcesSpec
from clonesweep.trials import FailReason, Intermediate, TrialResult, TrialSpec
from clonesweep.workers.runner import WorkerJob

__all__ = ["RayBackend"]

log = logging.getLogger(__name__)

# How long a worker may overrun trial_timeout (it checks the deadline itself after each
# epoch) before the driver kills it: covers a hang inside an epoch.
_KILL_GRACE_S = 30.0
_DRAIN_WAIT_S = 1.0
# Starts of a local Ray before giving up, when Ray gave up on its node still starting.
_LOCAL_START_TRIES = 3


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in this process's environment for the block (the Ray processes it
    starts inherit them), then put back what was there."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class _Running:
    spec: TrialSpec
    slot: int
    started: float
    killed_for_timeout: bool = False
    fused: Any = None  # the FusedGroup, for ensemble members (submit_fused)


class RayBackend:
    """Runs trials on Ray worker actors.

    Args:
        address: A Ray cluster address (``auto``, ``host:port``, ``ray://...``); None starts
            an embedded local Ray (or reuses one already initialized in this process; Ray
            itself honours ``RAY_ADDRESS``).
        resources: CPUs and (fractional) GPUs reserved by each worker actor.
        keras_backend: ``KERAS_BACKEND`` for the workers, set before they import Keras.
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
        self._keras_backend = keras_backend or os.environ.get("KERAS_BACKEND", "tensorflow")
        self._timeout = trial_timeout
        self._resource_wait = resource_wait
        self._owns_ray = False
        self._reaper = Reaper()
        self._actors: list[Any] = []
        self._pool: SlotPool | None = None
        self._waiting: list[tuple[TrialSpec, Any]] = []  # (spec, FusedGroup or None)
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
        import ray

        env = {"KERAS_BACKEND": self._keras_backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        inherit = False  # the workers inherit env from the Ray this driver starts
        if not ray.is_initialized():
            try:
                # A Ray this driver starts for itself listens on loopback only.
                local = self._address is None and not os.environ.get("RAY_ADDRESS")
                extra: dict[str, Any] = {}
                if local:
                    extra = {**loopback_node(), **self._local_start(slots)}
                    inherit = True
                started = self._init(ray, local, inherit, env, extra)
                if local:  # what ray.init started ends with this driver, even on SIGKILL
                    self._reaper.start(started)
            except Exception as exc:
                where = self._address or os.environ.get("RAY_ADDRESS") or "a local Ray"
                raise SweepFailed(f"cannot start or reach Ray ({where}): {exc}") from exc
            self._owns_ray = True
        try:
            slots = fit_slots(self._resources, slots)
        except SweepFailed:
            self.shutdown()
            raise
        job = self._stamped(job)
        job = self._data_by_reference(job)  # ux
        # max_task_retries=0: Ray itself never re-runs a trial, not even one its memory
        # monitor killed (task_oom_retries covers plain tasks, not actor methods): that
        # trial comes back as OutOfMemoryError -> `oom`, and the driver retries it at most
        # sweep.retries times. max_restarts=-1: the actor itself always comes back.
        # On a Ray this driver started, the workers already have env (and, on TensorFlow,
        # Keras imported; see _local_start): no runtime_env, so the actors take the
        # processes Ray prestarted instead of waiting for new ones (~1 s on 2 cores).
        actor_cls: Any = ray.remote(self.worker_class).options(
            num_cpus=self._resources.cpu, num_gpus=self._resources.gpu,
            max_restarts=-1, max_task_retries=0,
            **({} if inherit else {"runtime_env": {"env_vars": env}}))
        self._actors = [actor_cls.remote(job, f"worker-{i}") for i in range(slots)]
        self._pool = SlotPool(self._actors, self._resources, self._resource_wait)
        broker_env = {"runtime_env": {"env_vars": {"CLONESWEEP_NO_PRELOAD": "1"}}} if inherit \
            else {}
        self._broker = ray.remote(_Broker).options(
            num_cpus=0, max_concurrency=10_000, scheduling_strategy=on_driver_node(),
            **broker_env).remote()
        self._drain_ref = self._broker.drain.remote(_DRAIN_WAIT_S)

    def _init(self, ray: Any, local: bool, inherit: bool, env: dict[str, str],
              extra: dict[str, Any]) -> set[int]:
        """``ray.init``; the processes it started. A local node that Ray gave up on while it
        was still starting (Ray waits 30 s for it, a fixed figure, which a loaded machine
        can pass) is killed and started again, up to ``_LOCAL_START_TRIES`` times."""
        for attempt in range(1, _LOCAL_START_TRIES + 1):
            before = children_of(os.getpid()) if local else set()
            try:
                with _environment(env if inherit else {}), \
                        loopback_only() if local else contextlib.nullcontext():
                    ray.init(address=self._address, include_dashboard=False,
                             log_to_driver=False, logging_level=logging.WARNING,
                             configure_logging=False, **extra)
                return children_of(os.getpid()) - before
            except Exception as exc:
                if not local or attempt == _LOCAL_START_TRIES or not node_start_timed_out(exc):
                    raise
                kill_trees(children_of(os.getpid()) - before)
                ray.shutdown()
        raise AssertionError("unreachable")

    def _local_start(self, slots: int) -> dict[str, Any]:
        """``ray.init`` settings for the local Ray this driver starts for itself.

        On TensorFlow with CPU trials: as many CPUs as the slots need (at most the
        machine's), so Ray prestarts one worker process per slot and no more, and each
        prestarted process imports Keras as it starts (:mod:`clonesweep.workers.preload`),
        overlapping the ~4 s TensorFlow import with Ray's own start-up and the study's.
        """
        if self._keras_backend != "tensorflow" or self._resources.cpu <= 0:
            return {}
        cpus = min(os.cpu_count() or 1, max(1, math.ceil(slots * self._resources.cpu)))
        return {"num_cpus": cpus, **preload_modules(["clonesweep.workers.preload"])}

    def _stamped(self, job: WorkerJob) -> WorkerJob:
        """The job with the driver's versions (workers check theirs against them) and, for a
        GPU share below one, that share as the worker's GPU memory cap; set values stay."""
        from clonesweep.workers.versions import runtime_versions

        changes: dict[str, Any] = {}
        if not job.versions:
            changes["versions"] = runtime_versions(self._keras_backend)
        if job.gpu_memory_fraction is None and 0 < self._resources.gpu < 1:
            changes["gpu_memory_fraction"] = self._resources.gpu
        return dataclasses.replace(job, **changes) if changes else job

    # --- ux: in-memory data travels through the object store, once ---
    def _data_by_reference(self, job: WorkerJob) -> WorkerJob:
        """Arrays given in memory (the Python API's ``data=``) go to the object store once;
        the workers' loader reads that one copy instead of each actor's arguments carrying
        them (and again at each restart)."""
        from clonesweep.spec.model import DataSpec
        from clonesweep.workers.given import GIVEN_LOADER

        if job.data.loader != GIVEN_LOADER:
            return job
        import ray

        self._data_ref = ray.put(job.data.kwargs["arrays"])  # held while the workers run
        loader = "clonesweep.orchestrator.backends.ray.actors:stored_arrays"
        return dataclasses.replace(job, data=DataSpec(loader, {"ref": self._data_ref}))
    # --- end ux ---

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
                result = self._finish(ref)
                if result is not None:
                    events.append(result)
        self._dispatch()
        events.extend(self._failed_now)
        self._failed_now = []
        return events

    def _dispatch(self) -> None:
        """Send waiting trials, oldest first, to idle live slots. A trial meeting a broken
        slot (its worker cannot start) fails at once, for the next poll to return."""
        assert self._pool is not None
        while self._waiting and (index := self._pool.idle()) is not None:
            spec, fused = self._waiting.pop(0)
            slot = self._pool.slots[index]
            if slot.broken is not None:
                self._failed_now.append(TrialResult.failed(spec, *slot.broken))
                continue
            slot.busy = True
            if fused is not None:
                ref = slot.actor.run_fused.remote(fused)
                self._member_slot.update({m.number: index for m in fused.members})
            else:
                ref = slot.actor.run.remote(self._ship_once(spec, index), self._broker)
            self._running[ref] = _Running(spec, index, time.monotonic(), fused=fused)

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
                lost.append(TrialResult.failed(
                    run.spec, FailReason.WORKER_DIED,
                    f"{slot.name}'s node {str(slot.node)[:12]} left the Ray cluster"))
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

    def _finish(self, ref: Any) -> TrialResult | None:
        import ray
        from ray import exceptions as rex

        assert self._pool is not None
        run = self._running.pop(ref)
        self._pool.slots[run.slot].busy = False
        try:
            result: TrialResult = ray.get(ref)
        except rex.RayError as exc:
            if not isinstance(exc, rex.RayTaskError):  # the worker itself is in doubt
                self._pool.down(run.slot)
                self._shipped.pop(run.slot, None)  # a restarted worker holds no structure
            if never_ran(exc) and not run.killed_for_timeout:
                self._waiting.insert(0, (run.spec, run.fused))  # not an attempt: send again
                return None
            return self._failure(run, exc)
        if result.reason is FailReason.WORKER_DIED:  # e.g. restarted while idle
            self._shipped.pop(run.slot, None)
        if result.reason is None and result.state.value == "complete":
            self._best_slot[result.number] = run.slot
        return result

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
