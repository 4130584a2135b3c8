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
    """A real local Ray cluster (2 CPUs), started once; yields its address.

    Started again, as clonesweep's own local start is, when Ray gave up on its node while it
    was still starting (a fixed 30 s in Ray 2.60; passed at load 54-63 on 2 cores, which
    failed test_worker_killed and test_checkpoint_resume at setup)."""
    import ray

    from clonesweep.orchestrator.backends.ray._ray import node_start_timed_out
    from clonesweep.orchestrator.backends.ray.reaper import children_of, kill_trees

    # The workers import the tests' own modules that sweep files name in model.imports
    # (tests/scenarios/faults/faults_layers.py): the local Ray's processes take this
    # process's environment when ray.init starts them. A PYTHONPATH already set stays first.
    kept = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (kept, str(Path(__file__).parent / "scenarios" / "faults")) if p)
    try:
        for attempt in range(1, 4):
            before = children_of(os.getpid())
            try:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
                break
            except Exception as exc:
                if attempt == 3 or not node_start_timed_out(exc):
                    raise
                kill_trees(children_of(os.getpid()) - before)
                ray.shutdown()
    finally:
        if kept is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = kept
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
