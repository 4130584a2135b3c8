"""The arrays a driver's checks loaded, handed to the workers once (workers/given.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clonesweep.spec.model import DataSpec
from clonesweep.workers.given import CHECKED_LOADER, Checked, checked, shared_arrays
from clonesweep.workers.runner import import_object
from tests_support import counting_loader


@pytest.fixture
def loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    return counting_loader(tmp_path)


def _calls(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_the_ray_backend_takes_the_checked_arrays_and_the_box_lets_go(
        loader: tuple[str, Path]) -> None:
    ref, calls = loader
    loaded = import_object(ref)(limit=50)  # the driver's check
    box = Checked(loaded, DataSpec(ref, {"limit": 50}))
    data = DataSpec(CHECKED_LOADER, {"box": box})
    assert shared_arrays(data) is loaded and _calls(calls) == 1  # not called again
    assert "taken" in repr(box)  # the object store's copy is then the only one
    # A second start in the same process: the loader is called again, not an empty box used.
    again = shared_arrays(data)
    assert _calls(calls) == 2
    assert all(np.array_equal(a, b) for a, b in zip(again, loaded, strict=True))


def test_in_process_the_worker_uses_the_checked_arrays_as_they_are(
        loader: tuple[str, Path]) -> None:
    ref, calls = loader
    loaded = import_object(ref)(limit=50)
    box = Checked(loaded, DataSpec(ref, {"limit": 50}))
    # No arrays and no arguments in a printed job: the loader's name and the state only (the
    # module's name is random, so a digit test on the whole text would be flaky).
    assert repr(box) == f"Checked({ref!r}, held)"
    # The worker's loader takes them (the runner keeps them for all its trials).
    assert import_object(CHECKED_LOADER)(box=box) is loaded and _calls(calls) == 1
    assert "taken" in repr(box)
    assert checked(box)[0].shape == loaded[0].shape and _calls(calls) == 2
