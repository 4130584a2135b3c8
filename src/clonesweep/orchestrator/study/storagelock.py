"""A cross-process lock that lives where a study's storage lives.

:func:`storage_lock` serializes short critical sections (the driver lease's
compare-and-set) between every process that opens the same storage, on any host that
reaches it, with the storage's own means and without touching Optuna's tables:

* ``sqlite:///PATH`` and ``journal://PATH``: ``flock`` on the file itself. SQLite locks
  with POSIX record locks and Optuna's journal with a lock file, neither of which ``flock``
  interferes with on a local Linux file system; no lock file is created. On NFS, Linux
  emulates ``flock`` with POSIX locks, which SQLite uses too: keep a SQLite study on a local
  disk (as SQLite itself advises) and use PostgreSQL for a shared one.
* PostgreSQL: a session advisory lock (``pg_advisory_lock``) on a connection of its own.
* MySQL: ``GET_LOCK``.

Other URLs get no lock (the section is then only as atomic as its own steps).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["storage_lock"]

_WAIT_S = 60


@contextlib.contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """Hold the lock ``name`` on the storage at ``url`` for the block (blocking)."""
    if url.startswith(("sqlite:///", "journal://")):
        path = Path(url.split("://", 1)[1][1 if url.startswith("sqlite") else 0:])
        if str(path) == ":memory:" or not path.exists():
            yield
            return
        with _file_lock(path):
            yield
        return
    if url.startswith(("postgresql", "mysql")):
        with _server_lock(url, name):
            yield
        return
    yield


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


@contextlib.contextmanager
def _server_lock(url: str, name: str) -> Iterator[None]:
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    postgres = url.startswith("postgresql")
    take = ("SELECT pg_advisory_lock(:key)" if postgres
            else "SELECT GET_LOCK(:name, :wait)")
    drop = "SELECT pg_advisory_unlock(:key)" if postgres else "SELECT RELEASE_LOCK(:name)"
    args = {"key": key, "name": name[:64], "wait": _WAIT_S}
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(take), args)
            conn.commit()
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    conn.execute(sqlalchemy.text(drop), args)
                    conn.commit()
    finally:
        engine.dispose()
