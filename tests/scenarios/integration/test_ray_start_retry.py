"""A local Ray that Ray gave up on while its node was still starting is started again.

Ray 2.60's ``ray.init`` waits a fixed 30 s for the raylet it started to register; a loaded
machine passes that (seen at load 38 on 2 cores: a fault test's driver exited 1). Here
``ray.init`` is scripted (a real timeout cannot be provoked on demand): the first call starts
a real process, as Ray's would be, and raises Ray's error; the backend must kill that
process, shut down and call ``ray.init`` again, and retry nothing else.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from clonesweep.errors import SweepFailed
from clonesweep.orchestrator.backends.ray.backend import RayBackend
from clonesweep.orchestrator.backends.ray.startup import _LOCAL_START_TRIES, start_ray

TIMED_OUT = ("The current node timed out during startup. This could happen because some of "
             "the raylet failed to startup or the GCS has become overloaded.")


class _ScriptedInit:
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        self.left: list[subprocess.Popen[bytes]] = []
        self.shutdowns = 0

    def init(self, **kwargs: Any) -> None:
        # What a failed start leaves: a process of the driver's, as Ray's gcs_server is.
        self.left.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        raise Exception(self.errors[min(len(self.left), len(self.errors)) - 1])

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Any:
    import ray

    def use(errors: list[str]) -> _ScriptedInit:
        script = _ScriptedInit(errors)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray, "init", script.init)
        monkeypatch.setattr(ray, "shutdown", script.shutdown)
        return script

    yield use


def _start(backend: RayBackend) -> None:
    """What RayBackend.start does first (the job is not needed for it)."""
    start_ray(backend._address, "tensorflow", backend._resources, 1, backend._reaper)


def test_a_node_that_timed_out_starting_is_killed_and_started_again(scripted: Any) -> None:
    script = scripted([TIMED_OUT, "second start: something else"])
    try:
        with pytest.raises(SweepFailed, match="second start: something else"):
            _start(RayBackend())
        assert len(script.left) == 2 and script.shutdowns == 1  # no retry of another error
        assert script.left[0].wait(timeout=30) == -9  # the first start's process, killed
        assert script.left[1].poll() is None
    finally:
        for process in script.left:
            process.kill()
            process.wait()


def test_it_gives_up_after_its_tries(scripted: Any) -> None:
    script = scripted([TIMED_OUT])
    try:
        with pytest.raises(SweepFailed, match=r"cannot start or reach Ray .*timed out"):
            _start(RayBackend())
        assert len(script.left) == _LOCAL_START_TRIES
    finally:
        for process in script.left:
            process.kill()
            process.wait()


def test_a_cluster_address_is_never_retried(scripted: Any) -> None:
    script = scripted([TIMED_OUT])
    try:
        with pytest.raises(SweepFailed, match=r"cannot start or reach Ray \(ray://x:1\)"):
            _start(RayBackend(address="ray://x:1"))
        assert len(script.left) == 1 and script.shutdowns == 0
    finally:
        for process in script.left:
            process.kill()
            process.wait()
