"""Each private Ray use in clonesweep.orchestrator.backends.ray._ray, against the installed Ray.

Real local Ray throughout: the session cluster (tests/conftest.py) for actor errors, and a
Ray of its own in a subprocess for the ``ray.init`` settings and the monitor, which only a
driver that starts Ray has. A release that moves one of them fails here, naming it.
``never_ran`` (the text of ActorUnavailableError) is not provoked here: whether a call to a
killed actor is refused as restarting or as a reset connection is a race; the worker-kill
fault tests (tests/scenarios/faults) run through it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from clonesweep.orchestrator.backends.ray import _ray

pytestmark = pytest.mark.integration

# Runs in its own process: a Ray started with the fence's ray.init settings.
_OWN_RAY = textwrap.dedent("""
    import json, sys
    import ray
    from ray._private import worker as ray_worker
    from clonesweep.orchestrator.backends.ray import _ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             configure_logging=False, **_ray.loopback_node(),
             **_ray.preload_modules(["colorsys"]))

    @ray.remote(num_cpus=0)
    def preloaded():
        import sys
        return "colorsys" in sys.modules

    node = ray_worker._global_node
    monitors = node.all_processes.get("monitor") or []
    before = [info.process.poll() is None for info in monitors]
    from ray._private.services import resolve_ip_for_localhost
    out = {"ip": node.node_ip_address, "loopback_becomes": resolve_ip_for_localhost("127.0.0.1"),
           "preloaded": ray.get(preloaded.remote()),
           "monitors_running": before}
    _ray.stop_monitor()
    out["monitors_after"] = [info.process.poll() is None for info in monitors]
    ray.shutdown()
    print(json.dumps(out))
""")


def test_init_settings_and_the_monitor_on_a_ray_of_its_own() -> None:
    env = {**os.environ, "RAY_ADDRESS": ""}
    done = subprocess.run([sys.executable, "-c", _OWN_RAY], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # _node_ip_address: accepted (ray.init refuses unknown keywords), but this Ray swaps a
    # loopback value for the machine's own address, so it does not keep the node local.
    assert out["ip"] == out["loopback_becomes"]
    assert out["preloaded"] is True  # _system_config preload_python_modules
    # ray._private.worker._global_node.all_processes["monitor"]: found, running, stopped.
    assert out["monitors_running"] and all(out["monitors_running"])
    assert not any(out["monitors_after"])


def _raise_in(method: str) -> Any:
    import ray

    class Actor:
        def __init__(self, fail: bool) -> None:
            if fail:
                raise RuntimeError("worker version mismatch: keras 3.0 here, 3.1 on the driver")

        def ping(self) -> int:
            if method == "ping":
                raise ValueError("the trial's own error")
            return os.getpid()

    actor = ray.remote(Actor).options(num_cpus=0, max_restarts=0).remote(method == "init")
    try:
        ray.get(actor.ping.remote(), timeout=120)
    except ray.exceptions.RayError as exc:
        return exc
    finally:
        ray.kill(actor)
    raise AssertionError("the actor did not fail")


def test_an_actor_whose_init_raised_is_told_apart(ray_cluster: str) -> None:
    import ray

    exc = _raise_in("init")
    assert isinstance(exc, ray.exceptions.RayActorError)
    assert _ray.actor_init_failed(exc)
    # The typed flag alone decides on this Ray; the text is the fallback for other forms.
    assert exc.actor_init_failed
    why = _ray.start_failure(exc)
    assert why.startswith("version mismatch") and "3.1 on the driver" in why


def test_a_method_s_own_error_is_not_an_init_failure(ray_cluster: str) -> None:
    import ray

    exc = _raise_in("ping")
    assert isinstance(exc, ray.exceptions.RayTaskError)
    assert not _ray.actor_init_failed(exc)


def test_the_node_start_timeout_is_still_ray_s_text() -> None:
    """``node_start_timed_out`` reads the text ray.init raises when its raylet did not
    register in time; a release that rewords it fails here."""
    import inspect

    from ray._private import node

    source = inspect.getsource(node)
    assert _ray._NODE_START_TIMEOUT in source
    assert _ray.node_start_timed_out(Exception(
        "The current node timed out during startup. This could happen because some of the "
        "raylet failed to startup or the GCS has become overloaded."))
    assert not _ray.node_start_timed_out(Exception("Connection refused"))
