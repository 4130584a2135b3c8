"""Out-of-memory errors, told apart from the others: host memory, accelerator memory, or not.

Matching error text lives here, in one place: device allocators report running out as
TensorFlow's ``ResourceExhaustedError``, XLA's ``RESOURCE_EXHAUSTED`` (JAX; its text often
names no device) or PyTorch's ``OutOfMemoryError`` ("CUDA out of memory"); only a text
naming the CPU makes one of those a host OOM. Python's MemoryError is always the host.
No Keras import here.
"""

from __future__ import annotations

from clonesweep.trials import FailReason

__all__ = ["oom_reason"]


def oom_reason(exc: BaseException) -> FailReason | None:
    """``OOM`` (host memory), ``GPU_OOM`` (accelerator memory), or None (not memory)."""
    if isinstance(exc, MemoryError):
        return FailReason.OOM
    name = type(exc).__name__
    if name not in ("ResourceExhaustedError", "OutOfMemoryError") \
            and "RESOURCE_EXHAUSTED" not in str(exc):
        return None
    text = f"{name}: {exc}"
    on_cpu = "device:CPU" in text or "allocator cpu" in text or "on CPU" in text
    return FailReason.OOM if on_cpu else FailReason.GPU_OOM
