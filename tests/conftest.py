"""Shared fixtures: one real local Ray cluster per test session, tiny sweep files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from tests_support import write_sweep


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A real local Ray cluster (2 CPUs), started once; yields its address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def sweep_file(tmp_path: Path) -> Any:
    """A factory: ``sweep_file(**overrides)`` writes a tiny sweep file in tmp_path."""
    def make(**kwargs: Any) -> Path:
        return write_sweep(tmp_path, **kwargs)
    return make
