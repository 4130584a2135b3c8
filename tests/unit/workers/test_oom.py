"""GPU out-of-memory fails the trial (``gpu_oom``), not the worker; workers check versions."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import pytest

from clonesweep.errors import SweepFailed
from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import FailReason, TrialSpec, TrialState
from clonesweep.workers.oom import oom_reason
from clonesweep.workers.runner import TrialRunner, WorkerJob
from clonesweep.workers.versions import check_versions, runtime_versions
from tests_support import CONFIGS


def _named(name: str, message: str) -> Exception:
    """An exception whose class has the name a backend's error has (no GPU library here)."""
    return type(name, (Exception,), {})(message)


@pytest.mark.parametrize(("exc", "reason"), [
    (MemoryError(), FailReason.OOM),
    # TensorFlow on a GPU, and the same error on the host.
    (_named("ResourceExhaustedError", "OOM when allocating tensor with shape[4096,4096] and "
            "type float on /job:localhost/replica:0/task:0/device:GPU:0 by allocator "
            "GPU_0_bfc"), FailReason.GPU_OOM),
    (_named("ResourceExhaustedError", "OOM when allocating tensor with shape[4096,4096] on "
            "/job:localhost/replica:0/task:0/device:CPU:0 by allocator cpu"), FailReason.OOM),
    # JAX / XLA on a GPU: the text names no device.
    (_named("XlaRuntimeError", "RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
            "17179869184 bytes."), FailReason.GPU_OOM),
    (_named("JaxRuntimeError", "RESOURCE_EXHAUSTED: Failed to allocate request for 4.00GiB "
            "(4294967296B) on device ordinal 0"), FailReason.GPU_OOM),
    # PyTorch.
    (_named("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB"),
     FailReason.GPU_OOM),
    (ValueError("shapes (3,) and (4,) are incompatible"), None),
])
def test_out_of_memory_is_classified(exc: BaseException, reason: FailReason | None) -> None:
    assert oom_reason(exc) is reason


def test_gpu_oom_is_not_retried_but_host_oom_is() -> None:
    assert not FailReason.GPU_OOM.retryable
    assert FailReason.OOM.retryable
    assert FailReason("gpu_oom") is FailReason.GPU_OOM


def _job(**changes: Any) -> WorkerJob:
    base = WorkerJob(
        base_config_json=(CONFIGS / "digits_mlp.json").read_text(),
        imports=(),
        data=DataSpec("clonesweep.datasets:digits", {"limit": 200}),
        training=TrainingSpec(epochs=1, batch_size=32),
        objective=ObjectiveSpec(),
        keep_best=False,
    )
    return dataclasses.replace(base, **changes)


class _Quiet:
    def report(self, step: int, value: float) -> bool:
        return False


def test_a_gpu_oom_fails_the_trial_and_the_worker_runs_the_next(
        monkeypatch: pytest.MonkeyPatch) -> None:
    runner = TrialRunner(_job())

    def out_of_memory(*args: Any, **kwargs: Any) -> dict[str, float]:
        raise _named("ResourceExhaustedError", "OOM when allocating tensor on "
                     "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc")

    # The trial's training (Keras's fit, or the shared traced graph) runs out of memory.
    monkeypatch.setattr("clonesweep.workers.engines.kerasfit.fit_trial", out_of_memory)
    monkeypatch.setattr("clonesweep.workers.engines.graphfit.fit_trial_reused", out_of_memory)
    failed = runner.run(TrialSpec(0, {}, seed=1), _Quiet())
    assert failed.state is TrialState.FAIL and failed.reason is FailReason.GPU_OOM
    assert "GPU_0_bfc" in failed.message
    monkeypatch.undo()
    after = runner.run(TrialSpec(1, {}, seed=2), _Quiet())
    assert after.state is TrialState.COMPLETE, after.message


def test_versions_name_what_is_compared() -> None:
    found = dict(runtime_versions("tensorflow"))
    assert set(found) == {"python", "ray", "keras", "keras_backend", "clonesweep"}
    assert found["keras"] == keras.__version__ and found["keras_backend"] == "tensorflow"
    check_versions(runtime_versions("tensorflow"), runtime_versions("tensorflow"))
    check_versions((), runtime_versions("jax"))  # nothing sent: nothing checked


def test_a_worker_with_other_versions_refuses_naming_both() -> None:
    mine = dict(runtime_versions(keras.backend.backend()))
    driver = {**mine, "keras": "3.0.0", "keras_backend": "jax"}
    with pytest.raises(SweepFailed) as info:
        TrialRunner(_job(versions=tuple(driver.items())), worker="worker-7")
    text = str(info.value)
    assert "version mismatch on worker-7" in text
    assert f"keras: driver 3.0.0, worker {keras.__version__}" in text
    assert f"keras_backend: driver jax, worker {keras.backend.backend()}" in text
    assert "python" not in text  # only what differs is named
    TrialRunner(_job(versions=tuple(mine.items())))  # the same versions start
