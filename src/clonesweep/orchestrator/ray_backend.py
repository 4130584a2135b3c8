"""The Ray backend: one long-lived worker actor per parallel slot, and a pruning broker.

Each :class:`_WorkerActor` imports Keras once (its ``__init__`` builds a
:class:`~clonesweep.workers.runner.TrialRunner`) and then runs trial after trial. Per-epoch
values reach the driver through :class:`_Broker`, a small async actor: a worker's ``report``
call waits there until the driver, the only writer to the study, has decided whether to prune.
The driver long-polls the broker with ``drain`` so a report wakes the sweep loop at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from clonesweep.errors import SweepFailed
from clonesweep.spec.model import ResourcesSpec
from clonesweep.trials import FailReason, Intermediate, TrialResult, TrialSpec
from clonesweep.workers.runner import WorkerJob

__all__ = ["RayBackend"]

log = logging.getLogger(__name__)

# How long a worker may overrun trial_timeout (it checks the deadline itself after each
# epoch) before the driver kills it: covers a hang inside an epoch.
_KILL_GRACE_S = 30.0
_DRAIN_WAIT_S = 1.0
# A trial sent to a worker actor that is restarting (after its process died) fails at once
# without running; it is sent again every _RESUBMIT_S until the actor is back, for at most
# _RESTART_WAIT_S, then failed as worker_died.
_RESUBMIT_S = 1.0
_RESTART_WAIT_S = 300.0


class _Broker:
    """Holds per-epoch reports until the driver answers them (async actor: many waiters)."""

    def __init__(self) -> None:
        self._pending: list[Intermediate] = []
        self._waiters: dict[tuple[int, int], asyncio.Future[bool]] = {}
        self._wake = asyncio.Event()

    async def report(self, number: int, step: int, value: float) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters[(number, step)] = future
        self._pending.append(Intermediate(number, step, value))
        self._wake.set()
        return await future

    async def drain(self, wait_s: float) -> list[Intermediate]:
        if not self._pending:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait_s)
        self._wake.clear()
        out, self._pending = self._pending, []
        return out

    async def decide(self, number: int, step: int, prune: bool) -> None:
        future = self._waiters.pop((number, step), None)
        if future is not None and not future.done():
            future.set_result(prune)


class _BrokerReporter:
    def __init__(self, broker: Any, number: int) -> None:
        self._broker, self._number = broker, number

    def report(self, step: int, value: float) -> bool:
        import ray

        return bool(ray.get(self._broker.report.remote(self._number, step, value)))


class _WorkerActor:
    """A Ray actor wrapping one TrialRunner; created once per slot, restarted if it dies."""

    def __init__(self, job: WorkerJob, name: str) -> None:
        import ray

        from clonesweep.workers.runner import TrialRunner

        ctx = ray.get_runtime_context()
        self.node = ctx.get_node_id()
        self.name = name
        self.runner = TrialRunner(job, worker=name, node=self.node)

    def where(self) -> tuple[str, int]:
        return self.node, os.getpid()

    def run(self, spec: TrialSpec, broker: Any) -> TrialResult:
        return self.runner.run(spec, _BrokerReporter(broker, spec.number))

    def best_model(self, number: int) -> bytes | None:
        return self.runner.best_model(number)

    def run_fused(self, group: Any) -> TrialResult:
        return self.runner.run_fused(group)

    def member_output(self, number: int) -> Any:
        return self.runner.member_output(number)


@dataclass
class _Running:
    spec: TrialSpec
    slot: int
    started: float
    killed_for_timeout: bool = False
    unavailable_since: float | None = None  # its actor was restarting when it was sent
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
    """

    def __init__(self, *, address: str | None = None, resources: ResourcesSpec | None = None,
                 keras_backend: str | None = None, trial_timeout: float | None = None) -> None:
        self._address = address
        self._resources = resources or ResourcesSpec()
        self._keras_backend = keras_backend or os.environ.get("KERAS_BACKEND", "tensorflow")
        self._timeout = trial_timeout
        self._owns_ray = False
        self._actors: list[Any] = []
        self._free: list[int] = []
        self._running: dict[Any, _Running] = {}
        self._broker: Any = None
        self._drain_ref: Any = None
        self._best_slot: dict[int, int] = {}
        # Structural search: the structure keys each slot's worker holds, so that a
        # structure's config JSON is shipped once per worker (again after a restart).
        self._shipped: dict[int, set[str]] = {}
        self._member_slot: dict[int, int] = {}  # fused members -> the slot that trained them
        self._parked: list[tuple[float, _Running]] = []  # (send again at, trial): see _park

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, job: WorkerJob, slots: int) -> None:
        import ray

        if not ray.is_initialized():
            try:
                # A Ray this driver starts for itself listens on loopback only.
                local = self._address is None and not os.environ.get("RAY_ADDRESS")
                extra: dict[str, Any] = {"_node_ip_address": "127.0.0.1"} if local else {}
                ray.init(address=self._address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False, **extra)
            except Exception as exc:
                where = self._address or os.environ.get("RAY_ADDRESS") or "a local Ray"
                raise SweepFailed(f"cannot start or reach Ray ({where}): {exc}") from exc
            self._owns_ray = True
        try:
            slots = self._fit_slots(slots)
        except SweepFailed:
            self.shutdown()
            raise
        job = self._stamped(job)
        env = {"KERAS_BACKEND": self._keras_backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        # max_task_retries=0: Ray itself never re-runs a trial, not even one its memory
        # monitor killed (task_oom_retries covers plain tasks, not actor methods): that
        # trial comes back as OutOfMemoryError -> `oom`, and the driver retries it at most
        # sweep.retries times. max_restarts=-1: the actor itself always comes back.
        actor_cls = ray.remote(_WorkerActor).options(
            num_cpus=self._resources.cpu, num_gpus=self._resources.gpu,
            max_restarts=-1, max_task_retries=0, runtime_env={"env_vars": env})
        self._actors = [actor_cls.remote(job, f"worker-{i}") for i in range(slots)]
        self._free = list(range(slots))
        self._broker = ray.remote(_Broker).options(num_cpus=0, max_concurrency=10_000).remote()
        self._drain_ref = self._broker.drain.remote(_DRAIN_WAIT_S)

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

    def _fit_slots(self, slots: int) -> int:
        """Refuse a per-trial request the cluster can never meet; cap slots to what fits."""
        import ray

        total = ray.cluster_resources()
        res = self._resources
        fits = []
        for key, need in (("CPU", res.cpu), ("GPU", res.gpu)):
            if need > 0:
                have = float(total.get(key, 0.0))
                if have < need:
                    raise SweepFailed(
                        f"each trial asks for {need:g} {key} (sweep.resources) but the Ray "
                        f"cluster has {have:g} {key} in all; lower sweep.resources or add nodes")
                fits.append(int(have // need + 1e-9))
        if fits and min(fits) < slots:
            log.warning("the cluster fits %d trials at once, not %d: running %d in parallel",
                        min(fits), slots, min(fits))
            return min(fits)
        return slots

    def shutdown(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        if self._broker is not None:
            ray.kill(self._broker, no_restart=True)
        self._actors, self._running, self._broker, self._parked = [], {}, None, []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    # -- trials ---------------------------------------------------------------------------
    def free_slots(self) -> int:
        return len(self._free)

    def submit(self, spec: TrialSpec) -> None:
        slot = self._free.pop(0)
        spec = self._ship_once(spec, slot)
        ref = self._actors[slot].run.remote(spec, self._broker)
        self._running[ref] = _Running(spec, slot, time.monotonic())

    def poll(self, timeout: float) -> list[Intermediate | TrialResult]:
        import ray

        self._kill_overdue()
        self._send_parked()
        refs = [*self._running, self._drain_ref]
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        events: list[Intermediate | TrialResult] = []
        for ref in ready:
            if ref is self._drain_ref:
                events.extend(ray.get(ref))
                self._drain_ref = self._broker.drain.remote(_DRAIN_WAIT_S)
            else:
                result = self._finish(ref)
                if result is not None:
                    events.append(result)
        return events

    def _park(self, run: _Running, exc: BaseException) -> TrialResult | None:
        """The trial reached an actor that is restarting and did not run: send it again
        shortly (the slot stays taken), or fail it once the actor stayed away too long."""
        now = time.monotonic()
        since = run.unavailable_since if run.unavailable_since is not None else now
        if now - since > _RESTART_WAIT_S:
            self._free.append(run.slot)
            return TrialResult.failed(run.spec, FailReason.WORKER_DIED,
                                      f"its worker did not come back within "
                                      f"{_RESTART_WAIT_S:g} s: {_first_line(exc)}")
        self._shipped.pop(run.slot, None)
        run.unavailable_since = since
        self._parked.append((now + _RESUBMIT_S, run))
        return None

    def _send_parked(self) -> None:
        now = time.monotonic()
        due = [run for at, run in self._parked if at <= now]
        self._parked = [(at, run) for at, run in self._parked if at > now]
        for run in due:
            actor, spec = self._actors[run.slot], run.spec
            if run.fused is not None:
                ref = actor.run_fused.remote(run.fused)
            else:
                spec = self._ship_once(run.spec, run.slot)
                ref = actor.run.remote(spec, self._broker)
            self._running[ref] = dataclasses.replace(run, spec=spec, started=now)

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

        run = self._running.pop(ref)
        try:
            result: TrialResult = ray.get(ref)
        except rex.RayError as exc:
            if (isinstance(exc, rex.ActorUnavailableError) and "restarting" in str(exc)
                    and not run.killed_for_timeout):
                return self._park(run, exc)  # it never ran: not an attempt
            self._free.append(run.slot)
            return self._failure(run, ref)
        self._free.append(run.slot)
        if result.reason is FailReason.WORKER_DIED:  # e.g. restarted while idle
            self._shipped.pop(run.slot, None)
        if result.reason is None and result.state.value == "complete":
            self._best_slot[result.number] = run.slot
        return result

    def _failure(self, run: _Running, ref: Any) -> TrialResult:
        """The result for a trial whose Ray task raised."""
        import ray
        from ray import exceptions as rex

        try:
            ray.get(ref)
        except rex.OutOfMemoryError as exc:
            return TrialResult.failed(run.spec, FailReason.OOM, _first_line(exc))
        except rex.RayActorError as exc:
            self._shipped.pop(run.slot, None)  # a restarted worker holds no structure
            if run.killed_for_timeout:
                return TrialResult.failed(run.spec, FailReason.TIMEOUT,
                                          f"killed after {self._timeout:g} s + grace")
            if "creation task" in str(exc):  # __init__ raised: a retry cannot help
                return TrialResult.failed(run.spec, FailReason.USER_ERROR,
                                          f"worker failed to start: {_start_failure(exc)}")
            return TrialResult.failed(run.spec, FailReason.WORKER_DIED, _first_line(exc))
        except rex.RayTaskError as exc:
            return TrialResult.failed(run.spec, FailReason.USER_ERROR, str(exc)[-2000:])
        except rex.RayError as exc:
            return TrialResult.failed(run.spec, FailReason.WORKER_DIED, _first_line(exc))
        raise AssertionError("_failure() called for a task that succeeded")

    def _kill_overdue(self) -> None:
        import ray

        if self._timeout is None:
            return
        limit = self._timeout + max(_KILL_GRACE_S, 0.1 * self._timeout)
        now = time.monotonic()
        for run in self._running.values():
            if not run.killed_for_timeout and now - run.started > limit:
                run.killed_for_timeout = True
                ray.kill(self._actors[run.slot], no_restart=False)

    def answer(self, report: Intermediate, prune: bool) -> None:
        self._broker.decide.remote(report.number, report.step, prune)

    def fetch_model(self, number: int) -> bytes | None:
        import ray

        slot = self._best_slot.get(number)
        if slot is None:
            return None
        try:
            data: bytes | None = ray.get(self._actors[slot].best_model.remote(number))
        except ray.exceptions.RayError:
            return None
        return data

    # -- ensemble members (clonesweep.orchestrator.ensemble) -------------------------------
    def submit_fused(self, group: Any) -> None:
        """Run a :class:`~clonesweep.workers.member.FusedGroup` on one worker; it yields one
        result numbered ``group.number``. Start the backend with ``keep_members=True``."""
        slot = self._free.pop(0)
        ref = self._actors[slot].run_fused.remote(group)
        self._running[ref] = _Running(group.as_spec(), slot, time.monotonic(), fused=group)
        self._member_slot.update({m.number: slot for m in group.members})

    def fetch_member(self, number: int) -> Any:
        """The :class:`~clonesweep.workers.member.MemberOutput` of a completed member, once."""
        import ray

        slot = self._member_slot.pop(number, self._best_slot.get(number))
        if slot is None:
            return None
        try:
            return ray.get(self._actors[slot].member_output.remote(number))
        except ray.exceptions.RayError:
            return None


def _start_failure(exc: BaseException) -> str:
    """Why an actor's ``__init__`` failed: a version mismatch line first, then the tail."""
    text = str(exc)
    mismatch = next((line.strip() for line in text.splitlines() if "version mismatch" in line),
                    "")
    if mismatch:
        mismatch = mismatch[mismatch.index("version mismatch"):]
        return f"{mismatch}\n{text[-1000:]}"
    return text[-1500:]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
