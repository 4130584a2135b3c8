"""The driver lease is one compare-and-set on every storage: of drivers that reach it in the
same instant, exactly one takes it and the others are refused (real SQLite file, journal
file and PostgreSQL server; contenders in separate processes released by one barrier)."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from lease_race import contend

from clonesweep.orchestrator.study.lease import LEASE_ATTR

CONTENDERS = 4
ROUNDS = 3


def _race(url: str, name: str, locked: bool = True) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(CONTENDERS), ctx.Queue()
    procs = [ctx.Process(target=contend, args=(url, name, locked, barrier, results))
             for _ in range(CONTENDERS)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=300)[0] for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return sorted(outcomes)


def _storage(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    if kind == "journal":
        return f"journal://{tmp_path / 'journal.log'}"
    return str(request.getfixturevalue("postgres_url"))


def _create(url: str, name: str) -> None:
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage: Any = JournalStorage(JournalFileBackend(url[len("journal://"):]))
    else:
        storage = url
    optuna.create_study(study_name=name, storage=storage)


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_exactly_one_driver_takes_the_lease(kind: str, tmp_path: Path,
                                            request: pytest.FixtureRequest) -> None:
    url = _storage(kind, tmp_path, request)
    for _ in range(ROUNDS):
        name = f"race-{uuid.uuid4().hex[:8]}"
        _create(url, name)
        outcomes = _race(url, name)
        assert outcomes == ["refused"] * (CONTENDERS - 1) + ["won"], outcomes
        from clonesweep.orchestrator.study.storage import load_study

        assert load_study(name, url).user_attrs[LEASE_ATTR]["token"]
