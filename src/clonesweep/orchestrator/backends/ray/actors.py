"""The Ray actor classes: one worker actor per slot and the pruning broker.

They live apart from :mod:`clonesweep.orchestrator` so that a Ray worker process, which
imports a class's module to unpickle it, loads only what it runs: the orchestrator's package
would pull Optuna and SQLAlchemy into every worker (~0.25 s of CPU each, on top of Keras).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from clonesweep.trials import Intermediate, TrialResult, TrialSpec, node_label
from clonesweep.workers.runner import WorkerJob

__all__: list[str] = []


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
    def __init__(self, broker: Any, number: int, wait: bool = True) -> None:
        self._broker, self._number, self._wait = broker, number, wait

    def report(self, step: int, value: float) -> bool:
        import ray

        ref = self._broker.report.remote(self._number, step, value)
        # Without a pruner nothing can stop the trial: send and go on (the driver still
        # records the value and answers the broker, which then drops the waiter).
        return bool(ray.get(ref)) if self._wait else False


class _WorkerActor:
    """A Ray actor wrapping one TrialRunner; created once per slot, restarted if it dies."""

    def __init__(self, job: WorkerJob, name: str) -> None:
        import ray

        from clonesweep.workers.backend_setup import import_keras
        from clonesweep.workers.runner import TrialRunner

        import_keras(own_process=True)  # a no-op where the preload imported it
        ctx = ray.get_runtime_context()
        self.node = ctx.get_node_id()
        self.name = name
        self.runner = TrialRunner(job, worker=name, node=node_label(self.node))

    def where(self) -> tuple[str, int]:
        return self.node, os.getpid()

    def run(self, spec: TrialSpec, broker: Any) -> TrialResult:
        reporter = _BrokerReporter(broker, spec.number, self.runner.job.await_pruning)
        return self.runner.run(spec, reporter)

    def best_model(self, number: int) -> bytes | None:
        return self.runner.best_model(number)

    def run_packed(self, group: Any, broker: Any) -> list[TrialResult]:
        wait = self.runner.job.await_pruning
        reporters: list[Any] = [_BrokerReporter(broker, t.number, wait) for t in group.trials]
        return self.runner.run_packed(group, reporters)

    def run_fused(self, group: Any) -> TrialResult:
        return self.runner.run_fused(group)

    def member_output(self, number: int) -> Any:
        return self.runner.member_output(number)


# --- ux: arrays the driver loaded once (or was given), read from Ray's object store ---
def stored_arrays(ref: Any) -> Any:
    """A data loader: the arrays the driver put in the object store once (each worker on a
    node maps the same copy; numpy arrays are read without a copy)."""
    import ray

    return ray.get(ref)
# --- end ux ---
