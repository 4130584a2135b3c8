"""The storage password comes from the environment or a file, never the command line."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy.engine import make_url

from clonesweep.cli.main import main
from clonesweep.errors import SpecError
from clonesweep.spec.settings import PASSWORD_ENV, read_password_file, with_password


def _all_attributes(url: str) -> str:
    """Every study and trial attribute (user and system) in the database, as one text."""
    import sqlalchemy

    tables = ("study_user_attributes", "study_system_attributes", "trial_user_attributes",
              "trial_system_attributes")
    with sqlalchemy.create_engine(url).connect() as conn:
        rows = [list(row) for table in tables
                for row in conn.execute(sqlalchemy.text(f"select * from {table}"))]
    assert rows
    return json.dumps(rows, default=str)


def _user_only(url: str) -> str:
    u = make_url(url)
    return f"{u.drivername}://{u.username}@{u.host}:{u.port}/{u.database}"


def test_with_password_fills_a_user_only_url() -> None:
    url = with_password("postgresql+psycopg2://sweeper@db:5432/studies", "p@ss/w:rd",
                        source="env")
    assert make_url(url).password == "p@ss/w:rd" and make_url(url).username == "sweeper"
    assert with_password("sqlite:///x.db", "pw", source="env") == "sqlite:///x.db"
    assert with_password("postgresql://u@h/d", None, source="env") == "postgresql://u@h/d"


@pytest.mark.parametrize(("url", "match"), [
    ("postgresql://sweeper:0ld-pw@db/studies", "already holds a password"),
    ("postgresql://db/studies", "names no user"),
])
def test_with_password_refuses_ambiguous_urls(url: str, match: str) -> None:
    with pytest.raises(SpecError, match=match) as info:
        with_password(url, "new-secret", source="$" + PASSWORD_ENV)
    assert "0ld-pw" not in str(info.value) and "new-secret" not in str(info.value)


def test_password_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret\n")
    assert read_password_file(path) == "s3cret"
    path.write_text("\n")
    with pytest.raises(SpecError, match="empty"):
        read_password_file(path)
    with pytest.raises(SpecError, match="cannot read"):
        read_password_file(tmp_path / "missing")


@pytest.mark.parametrize("source", ["env", "file"])
def test_cli_takes_the_password_from_env_or_file(
        source: str, postgres_url: str, sweep_file: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    full = make_url(postgres_url)
    password = full.password or ""
    user_only = _user_only(postgres_url)
    assert password and password not in user_only
    name = f"pw-{source}-{uuid.uuid4().hex[:8]}"
    path = sweep_file(name=name, trials=1, epochs=1)
    argv = ["run", str(path), "--backend", "inprocess", "--storage", user_only]
    if source == "env":
        monkeypatch.setenv(PASSWORD_ENV, password)
    else:
        secret = tmp_path / "pg-password"
        secret.write_text(password + "\n")
        argv += ["--storage-password-file", str(secret)]
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    assert PASSWORD_ENV not in os.environ  # read once, then gone (a local Ray won't inherit)
    leaked_output = password in out.out + out.err
    assert not leaked_output, "the password was printed"
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert len(study.get_trials()) == 1
    leaked_attrs = password in _all_attributes(postgres_url)
    assert not leaked_attrs, "the password is in the study's attributes"
    run_folder = path.parent / "runs" / name
    leaks = [p.name for p in run_folder.rglob("*") if p.is_file()
             and password.encode() in p.read_bytes()]
    assert not leaks, "the password is in run-folder files"


def test_cli_without_the_password_fails_cleanly(
        postgres_url: str, sweep_file: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    user_only = _user_only(postgres_url)
    path = sweep_file(name=f"pw-none-{uuid.uuid4().hex[:8]}", trials=1, epochs=1)
    code = main(["status", str(path), "--storage", user_only])
    assert code == 1
    assert "password" in capsys.readouterr().err.lower()


def test_the_worker_job_carries_no_storage_url(postgres_url: str, sweep_file: Any) -> None:
    """What every worker receives holds neither the storage URL nor its password."""
    import dataclasses
    import pickle

    from clonesweep.orchestrator import base_model_config
    from clonesweep.orchestrator.sweep import worker_job
    from clonesweep.spec import load_sweep

    spec = load_sweep(sweep_file(name=f"pw-job-{uuid.uuid4().hex[:8]}"))
    spec = dataclasses.replace(spec, sweep=dataclasses.replace(spec.sweep, storage=postgres_url))
    wire = pickle.dumps(worker_job(spec, base_model_config(spec)))
    password = make_url(postgres_url).password or ""
    assert password and password.encode() not in wire
    assert b"postgresql" not in wire and b"studies" not in wire


def test_a_password_file_without_a_database_is_refused(
        sweep_file: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-value\n")
    code = main(["status", str(sweep_file(name="pw-sqlite")), "--storage-password-file",
                 str(secret)])
    err = capsys.readouterr().err
    assert code == 2 and "--storage-password-file" in err and "s3cret-value" not in err
