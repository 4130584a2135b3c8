"""Shared fixtures: one real local Ray cluster and one PostgreSQL server per test session,
tiny sweep files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from cluster_support import own_postgres
from pgserver import PostgresServer
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the session (see tests/pgserver.py).

    Without PostgreSQL's server binaries the tests that use it are skipped, except under CI
    (``CI`` set), where that is an error: .ci/run installs Debian's ``postgresql``.
    """
    with own_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql+psycopg2://sweeper:<pw>@127.0.0.1:<port>/studies`` on that server."""
    return postgres_server.url
