"""``pg``: a PostgreSQL server of each cluster test module's own (the cluster's processes are
given its password; the session's server stays out of their reach)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cluster_support import own_postgres
from pgserver import PostgresServer


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with own_postgres() as server:
        yield server
