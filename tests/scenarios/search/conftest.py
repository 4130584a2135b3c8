"""The ``sweep`` fixture: short sweep files for the search-feature tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from search_support import write


@pytest.fixture
def sweep(tmp_path: Path) -> Callable[..., Path]:
    """``sweep(**blocks)`` writes a sweep file in tmp_path (see :func:`write`)."""
    def make(**kwargs: Any) -> Path:
        return write(tmp_path, **kwargs)
    return make
