"""The ``sweep`` fixture: short sweep files for the search-feature tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests_support import write_sweep

# Shorter than the suite's default sweep: one epoch, 300 samples, three trials, and the
# loader's default optimizer and loss.
SEARCH_DEFAULTS: dict[str, Any] = {
    "name": "s", "trials": 3, "epochs": 1, "limit": 300, "optimizer": None, "loss": None,
    "parameters": """
  layers.hidden.units: {values: [8, 32]}
  optimizer.learning_rate: {min: 0.001, max: 0.01, log: true}"""}


@pytest.fixture
def sweep(tmp_path: Path) -> Callable[..., Path]:
    """``sweep(**blocks)`` writes a sweep file in tmp_path (tests_support.write_sweep with
    :data:`SEARCH_DEFAULTS`)."""
    def make(**kwargs: Any) -> Path:
        return write_sweep(tmp_path, **{**SEARCH_DEFAULTS, **kwargs})
    return make
