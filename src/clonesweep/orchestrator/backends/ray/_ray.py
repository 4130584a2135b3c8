"""Every use of Ray's private internals, and every match of its error text, in one module.

Each function names the private thing it uses, the public way, and why that way is not
enough here. ``tests/unit/orchestrator/backends/ray/test__ray.py`` exercises them against
the installed Ray on a real local cluster, so a release that moves one fails there, by name. The
import-boundary test (``tests/test_boundaries.py``) lets no other module import ``ray._*`` or
read a private attribute of a Ray object.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["actor_init_failed", "loopback_node", "loopback_only", "never_ran",
           "preload_modules", "start_failure", "stop_monitor"]

# The phrase Ray puts in an actor error whose ``__init__`` raised ("... raised in its creation
# task, ..."); read only where the typed flag is missing (see actor_init_failed).
_CREATION_TASK = "creation task"


# -- ray.init settings -------------------------------------------------------------------------
def loopback_node() -> dict[str, Any]:
    """``ray.init`` keyword for a local Ray this driver starts for itself: the node's address
    is loopback (``_node_ip_address``).

    Public way: ``ray start --node-ip-address`` for a cluster started from the shell; none
    for the Ray that ``ray.init`` starts in-process. Beware: Ray 2.60 replaces a loopback
    value with the machine's own address (``services.resolve_ip_for_localhost``), so on that
    Ray this keyword keeps nothing local
    (``tests/unit/orchestrator/backends/ray/test__ray.py`` records what the installed Ray
    does), and Ray binds its servers on all interfaces whatever it says
    (FACTS.md). Keeping a local Ray off the network needs more than this keyword.
    """
    return {"_node_ip_address": "127.0.0.1"}


def preload_modules(modules: list[str]) -> dict[str, Any]:
    """``ray.init`` keyword making every worker process Ray starts import ``modules`` as it
    starts, and not prestarting workers before a driver asks (``_system_config``:
    ``preload_python_modules``, ``prestart_worker_first_driver``).

    Public way: a ``runtime_env`` ``worker_process_setup_hook``. Not enough: it runs when a
    worker is handed a task, not when Ray prestarts it, so the ~4 s TensorFlow import would
    no longer overlap Ray's own start-up; and an actor with a runtime_env cannot take the
    prestarted processes (it waits for new ones, ~1 s on 2 cores).
    """
    return {"_system_config": {"preload_python_modules": list(modules),
                               "prestart_worker_first_driver": False}}


# -- the local node's processes ----------------------------------------------------------------
def stop_monitor() -> None:
    """Kill the autoscaler monitor of the local Ray this driver started, before
    ``ray.shutdown`` (``ray._private.worker._global_node.all_processes["monitor"]``).

    Ray's shutdown stops its GCS first and the monitor after it; the monitor then spends its
    whole second of grace trying to tell the GCS that is gone that it ends (measured: 1.02 s
    of every run's ~1.4 s shutdown). It holds nothing of the sweep's. Public way: none (the
    node's processes are not exposed). Best effort: on a Ray whose internals differ, shutdown
    goes on as before, only slower.
    """
    try:
        from ray._private import worker as ray_worker

        node: Any = ray_worker._global_node
        infos: list[Any] = [] if node is None else node.all_processes.get("monitor") or []
        for info in infos:
            if info.process.poll() is None:
                info.process.kill()
                info.process.wait(timeout=2)
    except Exception:  # an optimisation only: Ray shuts down as before
        pass


# -- Ray's errors --------------------------------------------------------------------------------
def actor_init_failed(exc: BaseException) -> bool:
    """Whether ``exc`` says the actor's ``__init__`` raised (a retry cannot help).

    Public way: ``RayActorError.actor_init_failed``, taken first. Ray sets it when it builds
    the error from the init's exception; the text is read as well because the error of a
    call to an actor whose init failed may be rebuilt from the stored death cause, with the
    message only (``tests/unit/orchestrator/backends/ray/test__ray.py`` shows which one this
    Ray gives).
    """
    return bool(getattr(exc, "actor_init_failed", False)) or _CREATION_TASK in str(exc)


def start_failure(exc: BaseException) -> str:
    """Why an actor's ``__init__`` failed, from Ray's text of the error (which embeds the
    init's traceback): a version mismatch line first (the worker's own check,
    :mod:`clonesweep.workers.versions`), then the tail. Public way: none; Ray passes the
    init's exception on only as text inside its own message."""
    text = str(exc)
    mismatch = next((line.strip() for line in text.splitlines() if "version mismatch" in line),
                    "")
    if mismatch:
        mismatch = mismatch[mismatch.index("version mismatch"):]
        return f"{mismatch}\n{text[-1000:]}"
    return text[-1500:]


#: What ``ray.init`` raises when the raylet it started did not register with the GCS within
#: the 30 s Ray 2.60 allows (``ray._private.node``, a constant there, no setting).
_NODE_START_TIMEOUT = "timed out during startup"


def node_start_timed_out(exc: BaseException) -> bool:
    """Whether ``ray.init`` gave up on a local node that was still starting (a loaded
    machine: seen at load 38 on 2 cores). Public way: none; the error is a plain
    ``Exception`` with this text."""
    return _NODE_START_TIMEOUT in str(exc)


def never_ran(exc: BaseException) -> bool:
    """Whether a trial's task failed before reaching its worker: sent to an actor that was
    restarting, or whose process was already gone.

    Public way: ``ActorUnavailableError``'s type says "may or may not have been executed";
    only its text (from Ray's core worker: "... restarting ...", "failed to connect ...")
    says the task never ran, which makes sending it again not an attempt.
    """
    from ray import exceptions as rex

    text = str(exc)
    return isinstance(exc, rex.ActorUnavailableError) and (
        "restarting" in text or "failed to connect" in text)


#: Ray 2.60 turns ``_node_ip_address="127.0.0.1"`` into the machine's external address
#: (``services.resolve_ip_for_localhost``) unless its "not a cluster" switch is on; with the
#: node address left at 127.0.0.1 its GCS, raylet, workers, driver and agents all listen on
#: loopback only (measured with /proc/net/tcp). The public switch is this environment
#: variable, read when ``ray`` is imported and inherited by every process Ray starts.
_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Keep a local Ray this driver starts on 127.0.0.1 for the block.

    The environment variable covers the processes Ray starts; the driver itself read it
    when it imported ``ray``, possibly before this block (tests, notebooks), so the constant
    it set is switched too (private: ``ray._private.ray_constants``; the public way is the
    variable set before ``import ray``). Best effort: on a Ray without the constant the
    socket test (tests/scenarios/safety/test_embedded_ray.py) says what listens where.
    """
    ray_constants: Any = None
    with contextlib.suppress(ImportError):  # a Ray that moved it: the variable alone
        from ray._private import ray_constants
    before = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if before is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        before_env = {key: os.environ.get(key) for key in _LOOPBACK_ENV}
        os.environ.update(_LOOPBACK_ENV)
        try:
            yield
        finally:
            for key, value in before_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        if before is not None:
            ray_constants.ENABLE_RAY_CLUSTER = before
