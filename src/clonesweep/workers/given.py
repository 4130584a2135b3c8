"""The data loader of in-memory data (``clonesweep.run(..., data=arrays)``).

A sweep file names its loader as ``module:function``; data handed to the Python API has no
such home, so the job carries the arrays themselves as this loader's argument. Only the
in-process backend passes them like that: the Ray backend swaps them for one object-store
reference before any worker starts (see :func:`clonesweep.orchestrator.backends.ray.actors.
stored_arrays`), so the arrays are not pickled into each worker's arguments.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GIVEN_LOADER", "arrays"]

#: The ``data.loader`` of a sweep whose data was given in memory.
GIVEN_LOADER = "clonesweep.workers.given:arrays"


def arrays(arrays: Any) -> Any:
    """Return ``arrays`` as given: ``(x_train, y_train, x_val, y_val)``."""
    return arrays
