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
from clonesweep.orchestrator.study.storage import load_study

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


@pytest.mark.slow
def test_two_drivers_started_together_one_runs(sweep_file: Any, tmp_path: Path) -> None:
    """Two `clonesweep run` processes on one new sweep, started at once: both pass the same
    pre-checks in about the same time and race for the study; one runs it, the other exits 1
    naming it. The trials are long enough that the winner still runs when the loser looks."""
    import os
    import subprocess
    import sys

    path = sweep_file(name="twin", trials=2, epochs=150, limit=1500)
    env = {k: v for k, v in os.environ.items() if k != "CLONESWEEP_STORAGE_PASSWORD"}
    argv = [sys.executable, "-m", "clonesweep", "run", str(path), "--backend", "inprocess"]
    drivers = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    done = [(d.wait(timeout=900), *d.communicate()) for d in drivers]
    codes = sorted(code for code, _, _ in done)
    assert codes == [0, 1], [err[-2000:] for _, _, err in done]
    loser = next(err for code, _, err in done if code == 1)
    assert "another driver is running sweep 'twin'" in loser, loser[-2000:]
    study = load_study("twin", f"journal://{tmp_path / 'runs' / 'twin' / 'study.log'}")
    assert len(study.trials) == 2
