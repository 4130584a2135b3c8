"""Probing a study storage without creating anything (for ``clonesweep validate``).

A SQLite or journal file that does not exist is never opened: only its folder is checked.
An existing SQLite file is read through a read-only connection; a database server gets
``SELECT 1`` and reads of Optuna's ``studies`` table, never a ``CREATE``. Messages show
URLs masked.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

from clonesweep.errors import SpecError
from clonesweep.spec.settings import mask_url

__all__ = ["Refuse", "can_create_in", "check_folder", "check_sqlite_file", "server_has_study",
           "sqlite_has_study"]

#: Builds the SpecError for a storage problem: ``refuse(problem, hint)``.
Refuse = Callable[[str, str], SpecError]


def check_folder(path: Path, refuse: Refuse) -> None:
    """``path`` can be created: its folder exists and is writable, or the nearest existing
    ancestor is a folder this process can create folders in.

    Writability is tried, not read from the permission bits: ``os.access`` says yes to root
    on /proc and on a read-only mount. The try is a folder made and removed at once in that
    ancestor, so nothing stays.
    """
    folder = path.parent
    try:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    except OSError as exc:  # e.g. a name too long, a symlink loop
        raise refuse(f"folder {folder} cannot be checked: {exc.strerror}",
                     "point the storage (or sweep.run_dir) at a folder you can write") from exc
    if not folder.is_dir():
        raise refuse(f"folder cannot be created: {folder} is not a folder",
                     "point the storage (or sweep.run_dir) at a folder you can write")
    if not can_create_in(folder):
        raise refuse(f"folder {folder} is not writable",
                     "point the storage (or sweep.run_dir) at a folder you can write")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise refuse(f"file {path} is not readable and writable", "fix its permissions")


def can_create_in(folder: Path) -> bool:
    """Whether this process can create (and remove) a folder in ``folder``; ``folder``'s
    times are put back, so a check leaves no trace."""
    try:
        times = folder.stat()
        probe = tempfile.mkdtemp(prefix=".clonesweep-probe-", dir=folder)
    except OSError:
        return False
    os.rmdir(probe)
    with contextlib.suppress(OSError):
        os.utime(folder, ns=(times.st_atime_ns, times.st_mtime_ns))
    return True


def check_sqlite_file(path: Path, refuse: Refuse) -> None:
    try:
        with path.open("rb") as stream:
            header = stream.read(16)
    except OSError as exc:
        raise refuse(f"file cannot be read: {exc.strerror}", "fix its permissions") from exc
    if header and header != b"SQLite format 3\x00":
        raise refuse(f"file {path} is not a SQLite database",
                     "point the storage at a new file or at a study database")


def sqlite_has_study(path: Path, name: str) -> bool:
    """Whether the SQLite file holds Optuna's tables and a study ``name`` (read-only)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "studies" not in tables:
            return False
        row = conn.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone()
        return row is not None
    finally:
        conn.close()


def server_has_study(url: str, name: str, refuse: Refuse) -> bool:
    """``SELECT 1`` on a database server; whether it holds a study ``name`` (reads only)."""
    try:
        import sqlalchemy
    except ImportError as exc:  # pragma: no cover - Optuna depends on SQLAlchemy
        raise refuse("needs SQLAlchemy", "pip install sqlalchemy") from exc
    timeout = {"connect_timeout": 5}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=timeout, poolclass=sqlalchemy.pool
                                          .NullPool)
    except ImportError as exc:
        raise refuse(f"driver is not installed: {exc}",
                     "pip install 'clonesweep[postgres]' (psycopg2), or pymysql for "
                     "mysql+pymysql://") from exc
    except Exception as exc:
        raise refuse(f"URL is not valid: {_first_line(exc)}",
                     "e.g. postgresql+psycopg2://USER@HOST:PORT/DB") from exc
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
            if not sqlalchemy.inspect(conn).has_table("studies"):
                return False
            row = conn.execute(sqlalchemy.text(
                "SELECT 1 FROM studies WHERE study_name = :name"), {"name": name}).first()
            return row is not None
    except Exception as exc:
        raise refuse(f"is unreachable: {_first_line(exc)}",
                     "check host, port, database and user; give the password through "
                     "--storage-password-file or $CLONESWEEP_STORAGE_PASSWORD") from exc
    finally:
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return mask_url(f"{type(exc).__name__}: {text[0] if text else ''}")
