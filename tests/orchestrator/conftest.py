"""Fixtures for the orchestrator tests: a real PostgreSQL server for the storage tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pgserver import PostgresServer, PostgresUnavailable, find_bindir


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the session (see tests/pgserver.py).

    Without PostgreSQL's server binaries the tests that use it are skipped, except under CI
    (``CI`` set), where that is an error: .ci/run installs Debian's ``postgresql``.
    """
    bindir = find_bindir()
    try:
        if bindir is None:
            raise PostgresUnavailable("no PostgreSQL server binaries (initdb) found: tried "
                                      "`pg_config --bindir`, /usr/lib/postgresql/*/bin, PATH")
        server = PostgresServer(bindir)
    except PostgresUnavailable as exc:
        if _in_ci():
            pytest.fail(f"CI is set but PostgreSQL is unusable: {exc}", pytrace=False)
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql+psycopg2://sweeper:<pw>@127.0.0.1:<port>/studies`` on that server."""
    return postgres_server.url
