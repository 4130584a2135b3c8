"""The data loader of in-memory data (``clonesweep.run(..., data=arrays)``), and the arrays
a driver loads once to share with its workers (:func:`shared_arrays`).

A sweep file names its loader as ``module:function``; data handed to the Python API has no
such home, so the job carries the arrays themselves as this loader's argument. Only the
in-process backend passes them like that: the Ray backend swaps them for one object-store
reference before any worker starts (see :func:`clonesweep.orchestrator.backends.ray.actors.
stored_arrays`), so the arrays are not pickled into each worker's arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clonesweep.spec.model import DataSpec

__all__ = ["GIVEN_LOADER", "arrays", "shared_arrays"]

#: The ``data.loader`` of a sweep whose data was given in memory.
GIVEN_LOADER = "clonesweep.workers.given:arrays"


def arrays(arrays: Any) -> Any:
    """Return ``arrays`` as given: ``(x_train, y_train, x_val, y_val)``."""
    return arrays


def shared_arrays(data: DataSpec) -> Any | None:
    """What ``data``'s loader returns, called here once, when it is arrays that workers can
    share (``(x_train, y_train, x_val, y_val)`` with optional sample weights); None when it
    returns datasets (not picklable in general: each worker calls the loader itself) or
    fails (each worker then meets the failure and fails its trials as ``user_error``)."""
    from clonesweep.workers.engines.base import TrainData
    from clonesweep.workers.runner import import_object
    from clonesweep.workers.streams import stream_of

    if data.loader == GIVEN_LOADER:
        return data.kwargs["arrays"]
    try:
        loaded = import_object(data.loader)(**data.kwargs)
        if stream_of(loaded) is not None:
            return None
        TrainData.of(loaded)  # raises for anything but arrays
    except Exception:  # the workers report it, trial by trial, as they did
        return None
    return loaded
