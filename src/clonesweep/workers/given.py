"""The data loader of in-memory data (``clonesweep.run(..., data=arrays)``), the arrays a
driver's checks loaded (:class:`Checked`), and the arrays a driver shares with its workers
(:func:`shared_arrays`).

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

__all__ = ["CHECKED_LOADER", "GIVEN_LOADER", "Checked", "arrays", "checked", "shared_arrays"]

#: The ``data.loader`` of a sweep whose data was given in memory.
GIVEN_LOADER = "clonesweep.workers.given:arrays"
#: The ``data.loader`` of a sweep whose loader the driver's checks already called.
CHECKED_LOADER = "clonesweep.workers.given:checked"


def arrays(arrays: Any) -> Any:
    """Return ``arrays`` as given: ``(x_train, y_train, x_val, y_val)``."""
    return arrays


class Checked:
    """What a sweep's loader returned to the driver's checks (``run``'s ``validate --data``
    checks), for the workers, so the loader is not called a second time.

    Handed over once, so that the driver keeps no copy of its own for the run: the Ray
    backend :meth:`take` s the arrays to put them in the object store (the store's copy is
    then the one); in process, the worker takes them and keeps them for all its trials.
    Once taken, :func:`checked` calls the loader again (a backend started a second time in
    the same process).
    """

    def __init__(self, arrays: Any, origin: DataSpec) -> None:
        self._arrays = arrays
        self.origin = origin  # the sweep's own loader and its kwargs

    def take(self) -> Any | None:
        """The arrays, which this box then no longer holds (None: already taken)."""
        arrays, self._arrays = self._arrays, None
        return arrays

    def __repr__(self) -> str:
        state = "taken" if self._arrays is None else "held"
        return f"Checked({self.origin.loader!r}, {state})"


def checked(box: Checked) -> Any:
    """The loader of :data:`CHECKED_LOADER`: the checked arrays, taken from the box, while it
    holds them; else what the sweep's own loader returns now."""
    held = box.take()
    if held is not None:
        return held
    from clonesweep.workers.runner import import_object

    return import_object(box.origin.loader)(**box.origin.kwargs)


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
    if data.loader == CHECKED_LOADER:
        box: Checked = data.kwargs["box"]
        taken = box.take()
        if taken is not None:
            return taken
        data = box.origin
    try:
        loaded = import_object(data.loader)(**data.kwargs)
        if stream_of(loaded) is not None:
            return None
        TrainData.of(loaded)  # raises for anything but arrays
    except Exception:  # the workers report it, trial by trial, as they did
        return None
    return loaded
