"""Out-of-memory errors, told apart from the others: host memory, accelerator memory, or not.

The backends' error text is read in the Keras fence (:func:`clonesweep.workers._keras.
memory_exhausted`); this module turns its answer into a :class:`FailReason`. Python's
MemoryError is always the host's and needs no Keras; any other error is read through the
fence, imported then (Keras is loaded by the time a trial fails).
"""

from __future__ import annotations

from clonesweep.trials import FailReason

__all__ = ["oom_reason"]


def oom_reason(exc: BaseException) -> FailReason | None:
    """``OOM`` (host memory), ``GPU_OOM`` (accelerator memory), or None (not memory)."""
    if isinstance(exc, MemoryError):
        return FailReason.OOM
    from clonesweep.workers._keras import memory_exhausted

    where = memory_exhausted(exc)
    if where is None:
        return None
    return FailReason.OOM if where == "host" else FailReason.GPU_OOM
