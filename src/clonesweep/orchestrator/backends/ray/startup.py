"""Starting the Ray side of a sweep: Ray itself, the job the workers get, the actors.

:class:`~clonesweep.orchestrator.backends.ray.backend.RayBackend` calls these once, from
``start``; what happens to trials afterwards (dispatch, poll, failures, timeouts) is the
backend's own. Split from it because the two are read apart: this part is about Ray's
settings and processes, the backend about one trial's way through a slot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from clonesweep.errors import SweepFailed
from clonesweep.orchestrator.backends.ray._ray import (
    loopback_node,
    loopback_only,
    node_start_timed_out,
    preload_modules,
)
from clonesweep.orchestrator.backends.ray.actors import _Broker
from clonesweep.orchestrator.backends.ray.reaper import Reaper, children_of, kill_trees
from clonesweep.orchestrator.backends.ray.slots import on_driver_node
from clonesweep.spec.model import ResourcesSpec
from clonesweep.workers.runner import WorkerJob

__all__ = [
    "RayStart",
    "data_by_reference",
    "stamped",
    "start_actors",
    "start_broker",
    "start_ray",
]


# Starts of a local Ray before giving up, when Ray gave up on its node still starting.
_LOCAL_START_TRIES = 3


@dataclass(frozen=True)
class RayStart:
    """What :func:`start_ray` did.

    Attributes:
        owns_ray: This driver called ``ray.init`` (it shuts Ray down at the end).
        inherit: The Ray processes were started by this driver with the workers' environment
            set: actors need no ``runtime_env`` (they take Ray's prestarted processes).
        env: The workers' environment variables (``KERAS_BACKEND``...).
    """

    owns_ray: bool
    inherit: bool
    env: dict[str, str]


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


def start_ray(address: str | None, keras_backend: str, resources: ResourcesSpec, slots: int,
              reaper: Reaper) -> RayStart:
    """Join the Ray at ``address`` (or ``RAY_ADDRESS``), or start a local one on loopback
    only, whose processes ``reaper`` ends with this driver; nothing if Ray is initialized.

    Raises:
        SweepFailed: Ray cannot be started or reached.
    """
    import ray

    env = {"KERAS_BACKEND": keras_backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if ray.is_initialized():
        return RayStart(owns_ray=False, inherit=False, env=env)
    local = address is None and not os.environ.get("RAY_ADDRESS")
    try:
        # A Ray this driver starts for itself listens on loopback only.
        extra: dict[str, Any] = {}
        if local:
            extra = {**loopback_node(), **_local_start(keras_backend, resources, slots)}
        started = _init(address, local, env, extra)
        if local:  # what ray.init started ends with this driver, even on SIGKILL
            reaper.start(started)
    except Exception as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a local Ray"
        raise SweepFailed(f"cannot start or reach Ray ({where}): {exc}") from exc
    return RayStart(owns_ray=True, inherit=local, env=env)


def _init(address: str | None, local: bool, env: dict[str, str],
          extra: dict[str, Any]) -> set[int]:
    """``ray.init``; the processes it started. A local node that Ray gave up on while it was
    still starting (Ray waits 30 s for it, a fixed figure, which a loaded machine can pass)
    is killed and started again, up to ``_LOCAL_START_TRIES`` times."""
    import ray

    for attempt in range(1, _LOCAL_START_TRIES + 1):
        before = children_of(os.getpid()) if local else set()
        try:
            with _environment(env if local else {}), \
                    loopback_only() if local else contextlib.nullcontext():
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False, **extra)
            return children_of(os.getpid()) - before
        except Exception as exc:
            if not local or attempt == _LOCAL_START_TRIES or not node_start_timed_out(exc):
                raise
            kill_trees(children_of(os.getpid()) - before)
            ray.shutdown()
    raise AssertionError("unreachable")


def _local_start(keras_backend: str, resources: ResourcesSpec, slots: int) -> dict[str, Any]:
    """``ray.init`` settings for the local Ray this driver starts for itself.

    On TensorFlow with CPU trials: as many CPUs as the slots need (at most the
    machine's), so Ray prestarts one worker process per slot and no more, and each
    prestarted process imports Keras as it starts (:mod:`clonesweep.workers.preload`),
    overlapping the ~4 s TensorFlow import with Ray's own start-up and the study's.
    """
    if keras_backend != "tensorflow" or resources.cpu <= 0:
        return {}
    cpus = min(os.cpu_count() or 1, max(1, math.ceil(slots * resources.cpu)))
    return {"num_cpus": cpus, **preload_modules(["clonesweep.workers.preload"])}


def stamped(job: WorkerJob, keras_backend: str, resources: ResourcesSpec) -> WorkerJob:
    """The job with the driver's versions (workers check theirs against them) and, for a
    GPU share below one, that share as the worker's GPU memory cap; set values stay."""
    from clonesweep.workers.versions import runtime_versions

    changes: dict[str, Any] = {}
    if not job.versions:
        changes["versions"] = runtime_versions(keras_backend)
    if job.gpu_memory_fraction is None and 0 < resources.gpu < 1:
        changes["gpu_memory_fraction"] = resources.gpu
    return dataclasses.replace(job, **changes) if changes else job


def data_by_reference(job: WorkerJob) -> tuple[WorkerJob, Any]:
    """Arrays go to the object store once: those given in memory (the Python API's
    ``data=``) and those a sweep file's loader returns (called here, on the driver, once).
    The workers' loader reads that one copy (numpy arrays without a copy, mapped from the
    node's shared object store) instead of each worker calling the loader and holding its
    own. A loader returning datasets is left to each worker. Returns the job and the object
    reference to hold while the workers run (None: the job loads its own data)."""
    from clonesweep.spec.model import DataSpec
    from clonesweep.workers.given import shared_arrays

    arrays = shared_arrays(job.data)
    if arrays is None:
        return job, None
    import ray

    ref = ray.put(arrays)
    loader = "clonesweep.orchestrator.backends.ray.actors:stored_arrays"
    return dataclasses.replace(job, data=DataSpec(loader, {"ref": ref})), ref


def start_actors(worker_class: type, job: WorkerJob, slots: int, resources: ResourcesSpec,
                 start: RayStart) -> list[Any]:
    """One ``worker_class`` actor per slot, each holding ``job``."""
    import ray

    # max_task_retries=0: Ray itself never re-runs a trial, not even one its memory
    # monitor killed (task_oom_retries covers plain tasks, not actor methods): that
    # trial comes back as OutOfMemoryError -> `oom`, and the driver retries it at most
    # sweep.retries times. max_restarts=-1: the actor itself always comes back.
    # On a Ray this driver started, the workers already have env (and, on TensorFlow,
    # Keras imported; see _local_start): no runtime_env, so the actors take the
    # processes Ray prestarted instead of waiting for new ones (~1 s on 2 cores).
    actor_cls: Any = ray.remote(worker_class).options(
        num_cpus=resources.cpu, num_gpus=resources.gpu, max_restarts=-1, max_task_retries=0,
        **({} if start.inherit else {"runtime_env": {"env_vars": start.env}}))
    return [actor_cls.remote(job, f"worker-{i}") for i in range(slots)]


def start_broker(start: RayStart) -> Any:
    """The pruning broker actor, on the driver's node (see the backend's docstring)."""
    import ray

    env = ({"runtime_env": {"env_vars": {"CLONESWEEP_NO_PRELOAD": "1"}}} if start.inherit
           else {})
    return ray.remote(_Broker).options(num_cpus=0, max_concurrency=10_000,
                                       scheduling_strategy=on_driver_node(), **env).remote()
