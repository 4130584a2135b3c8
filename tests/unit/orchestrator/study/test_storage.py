"""A real sweep against each storage: the run-folder SQLite file and a real PostgreSQL server.

The PostgreSQL server (tests/pgserver.py) is shared by the session, so every test uses a study
name of its own.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy.engine import make_url

from clonesweep.errors import StudyError
from clonesweep.orchestrator import InProcessBackend, base_model_config, run_sweep
from clonesweep.orchestrator.commands.report import best_payload, status_payload
from clonesweep.orchestrator.study.storage import _storage, load_study, mask_url, storage_url
from clonesweep.spec import load_sweep

STORAGES = ["default", "sqlite", "postgresql"]


@pytest.fixture(params=STORAGES)
def storage(request: pytest.FixtureRequest) -> str | None:
    """``None`` for the default (the run folder's journal), else a SQLite or PostgreSQL
    URL."""
    if request.param == "default":
        return None
    if request.param == "sqlite":
        return f"sqlite:///{request.getfixturevalue('tmp_path') / 'explicit.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _spec(path: Path, url: str | None) -> Any:
    spec = load_sweep(path)
    if url is not None:
        spec = dataclasses.replace(spec, sweep=dataclasses.replace(spec.sweep, storage=url))
    return spec


def _run(path: Path, url: str | None) -> Any:
    spec = _spec(path, url)
    return spec, run_sweep(spec, base_model_config(spec), InProcessBackend())


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _leaks(password: str, files: list[Path]) -> list[str]:
    """Names of the files holding the password's bytes (never the password itself)."""
    if not password:
        raise AssertionError("no password to look for")
    return [p.name for p in files if password.encode() in p.read_bytes()]


def test_a_sweep_records_and_continues_its_study(storage: str | None, sweep_file: Any) -> None:
    name = f"store-{uuid.uuid4().hex[:10]}"
    spec, outcome = _run(sweep_file(name=name, trials=3, epochs=1), storage)
    url = storage_url(spec)
    if storage is None:
        assert url.startswith("journal://") and (spec.run_folder / "study.log").is_file()
    else:
        same = url == storage  # (compared apart: a failing assert would print the password)
        assert same and not (spec.run_folder / "study.log").exists()

    study = load_study(name, url)
    trials = study.get_trials()
    assert len(trials) == 3
    assert all(t.state is optuna.trial.TrialState.COMPLETE for t in trials), \
        [(t.number, t.state, t.user_attrs.get("message")) for t in trials]
    for t in trials:
        for key in ("seed", "seeds", "config_hash", "history"):
            assert key in t.user_attrs, (t.number, key)
        assert isinstance(t.user_attrs["seed"], int)
        assert t.user_attrs["seeds"] and len(t.user_attrs["config_hash"]) == 64
        assert len(t.user_attrs["history"]["loss"]) == 1  # one epoch
    assert outcome.counts.complete == 3
    assert outcome.best is not None and outcome.best.number == study.best_trial.number

    # `clonesweep status` / `best` read the same study.
    status = status_payload(spec)
    assert status["finished"] == status["complete"] == 3 and status["failed"] == 0
    assert status["best_trial"] == study.best_trial.number
    assert status["best_value"] == pytest.approx(study.best_value)
    best = best_payload(spec)["best"]
    assert best["number"] == study.best_trial.number
    assert best["val_accuracy"] == pytest.approx(study.best_value)
    assert best["params"] == study.best_trial.params
    assert best["seed"] == study.best_trial.user_attrs["seed"]
    assert best["config_hash"] == study.best_trial.user_attrs["config_hash"]

    # The storage URL is shown masked everywhere, and the password is in no run-folder file.
    summary = json.loads((spec.run_folder / "summary.json").read_text())
    for payload in (summary, status, best_payload(spec)):
        shown_masked = payload["storage"] == mask_url(url)
        assert shown_masked, f"{payload['name']}: storage shown as something else than masked"
    if storage is not None and storage.startswith("postgresql"):
        password = make_url(storage).password or ""
        masked = mask_url(url) == url.replace(password, "***")
        long_enough = len(password) >= 16
        assert long_enough and masked
        leaked = [i for i, payload in enumerate((summary, status, best_payload(spec)))
                  if password in json.dumps(payload)]
        assert not leaked, "the password is in a payload (0 summary, 1 status, 2 best)"
        files = _files(spec.run_folder)
        assert any(p.name == "best.keras" for p in files)
        leaks = _leaks(password, files)
        assert not leaks, "the storage password is written into run files"

    # The same sweep again with a larger budget continues the same study.
    _, second = _run(sweep_file(name=name, trials=5, epochs=1), storage)
    assert second.counts.finished == 2
    study = load_study(name, url)
    assert len(study.get_trials()) == 5
    names = optuna.get_all_study_names(_storage(url))
    assert name in names
    assert status_payload(spec)["finished"] == 5


def test_the_postgres_server_wants_the_password(postgres_url: str) -> None:
    """The fixture's role really authenticates by password (SCRAM over TCP)."""
    import sqlalchemy

    good = make_url(postgres_url)
    with sqlalchemy.create_engine(good).connect() as conn:
        assert conn.execute(sqlalchemy.text("select current_user")).scalar() == "sweeper"
    bad = good.set(password="not-" + (good.password or ""))
    with pytest.raises(sqlalchemy.exc.OperationalError, match="password authentication"):
        sqlalchemy.create_engine(bad).connect().close()


def test_a_password_in_the_sweep_file_is_refused(postgres_url: str, sweep_file: Any) -> None:
    """A URL with its password is refused at load (tests/scenarios/safety/test_secrets.py has every
    form); the message shows it masked."""
    from clonesweep.errors import SpecError

    name = f"store-{uuid.uuid4().hex[:10]}"
    path = sweep_file(name=name, trials=1, epochs=1, sweep_extra=f"\n  storage: {postgres_url}")
    with pytest.raises(SpecError, match="CLONESWEEP_STORAGE_PASSWORD") as info:
        load_sweep(path)
    shown = (make_url(postgres_url).password or "") in str(info.value)
    assert not shown, "the refusal printed the password"
    assert not (path.parent / "runs").exists()


def test_processes_opening_a_new_sqlite_file_at_once_all_succeed(
        sweep_file: Any, tmp_path: Path) -> None:
    """Optuna creates the schema of a new database when it opens it; a driver creating its
    study while `clonesweep status` (or a dashboard) opens the same new file collided on the
    schema version row and failed. Four openers started together all get the study."""
    import threading

    from clonesweep.orchestrator.study.storage import open_study

    spec = load_sweep(sweep_file())
    url = f"sqlite:///{tmp_path / 'race.db'}"
    for _ in range(3):  # the collision needs the openers to meet; give them a few rounds
        (tmp_path / "race.db").unlink(missing_ok=True)
        barrier, errors = threading.Barrier(4), []

        def opener(barrier: threading.Barrier = barrier, errors: list[str] = errors) -> None:
            barrier.wait()
            try:
                open_study(spec, url)
            except Exception as exc:  # recorded, asserted below
                errors.append(repr(exc))

        threads = [threading.Thread(target=opener) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
    assert optuna.load_study(study_name=spec.name, storage=url).study_name == spec.name


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "journal"])
def test_user_attributes_of_a_trial_go_in_at_once(kind: str, tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:
    """set_user_attrs writes every attribute (one transaction on SQL storages), keeps the
    trial's own view current, and the attributes read back from a fresh connection."""
    from clonesweep.orchestrator.study.storage import _storage, set_user_attrs

    url = {"sqlite": f"sqlite:///{tmp_path / 'attrs.db'}",
           "journal": f"journal://{tmp_path / 'attrs.journal'}",
           "postgresql": ""}[kind]
    if kind == "postgresql":
        url = str(request.getfixturevalue("postgres_url"))
    name = f"attrs-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=_storage(url))
    trial = study.ask()
    attrs = {"seed": 7, "history": {"loss": [0.5, 0.25]}, "engine": "graph", "note": None}
    set_user_attrs(trial, attrs)
    assert trial.user_attrs == attrs
    study.tell(trial, 0.5)
    if kind == "journal":
        from clonesweep.orchestrator.study.storage import commit

        commit(study)
    again = optuna.load_study(study_name=name, storage=_storage(url))
    assert again.trials[0].user_attrs == attrs


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "journal"])
def test_trials_finished_together_are_written_whole(kind: str, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    """finish_trials records each trial's attributes, state and value (one transaction on
    SQL storages); a batch holding an already finished trial is refused and writes nothing
    at all."""
    from clonesweep.orchestrator.study.storage import _storage, commit, finish_trials

    url = {"sqlite": f"sqlite:///{tmp_path / 'finish.db'}",
           "journal": f"journal://{tmp_path / 'finish.journal'}",
           "postgresql": ""}[kind]
    if kind == "postgresql":
        url = str(request.getfixturevalue("postgres_url"))
    name = f"finish-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=_storage(url))
    trials = [study.ask() for _ in range(4)]
    done, fail = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
    finish_trials(study, [(trials[0], {"seed": 1, "history": {"loss": [0.5]}}, done, 0.25),
                          (trials[1], {"seed": 2, "fail_reason": "oom"}, fail, None)])
    with pytest.raises(RuntimeError, match="finished"):
        finish_trials(study, [(trials[2], {"seed": 3}, done, 0.75),
                              (trials[0], {"seed": 9}, done, 0.0)])
    commit(study)
    again = optuna.load_study(study_name=name, storage=_storage(url))
    got = [(t.state, t.value, t.user_attrs) for t in again.trials]
    assert got[0] == (done, 0.25, {"seed": 1, "history": {"loss": [0.5]}})
    assert got[1] == (fail, None, {"seed": 2, "fail_reason": "oom"})
    assert got[2:] == [(optuna.trial.TrialState.RUNNING, None, {})] * 2
    assert again.trials[0].datetime_complete is not None


def test_the_default_is_the_journal_and_an_older_run_folder_keeps_its_sqlite(
        sweep_file: Any) -> None:
    from clonesweep.orchestrator.study.storage import study_exists_at

    spec = load_sweep(sweep_file(name="dflt"))
    journal = f"journal://{(spec.run_folder / 'study.log').resolve()}"
    assert storage_url(spec) == journal
    assert not study_exists_at(journal)
    with pytest.raises(StudyError, match="no such file"):
        load_study("dflt", journal)  # a read creates nothing
    assert not spec.run_folder.exists()

    old = spec.run_folder / "study.db"  # a run folder from before the journal default
    spec.run_folder.mkdir(parents=True)
    optuna.create_study(study_name="dflt", storage=f"sqlite:///{old}")
    assert storage_url(spec) == f"sqlite:///{old.resolve()}"
    (spec.run_folder / "study.log").touch()  # both: the journal wins
    assert storage_url(spec) == journal
