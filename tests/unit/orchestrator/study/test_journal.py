"""The group-commit journal: Optuna's file format, durable once a trial is told, resumable.

Real files throughout; the crash test SIGKILLs a real process right after a tell.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

from clonesweep.orchestrator import InProcessBackend, base_model_config, run_sweep
from clonesweep.orchestrator.commands.report import best_payload, status_payload
from clonesweep.orchestrator.study.journal import GroupCommitJournal, commit, journal_storage
from clonesweep.orchestrator.study.storage import dashboard_storage, storage_url
from clonesweep.spec import load_sweep

COMPLETE = optuna.trial.TrialState.COMPLETE
RUNNING = optuna.trial.TrialState.RUNNING
DIST = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


def _optuna_reads(path: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study as Optuna's own file backend reads it (what optuna-dashboard uses)."""
    study = optuna.load_study(study_name=name,
                              storage=JournalStorage(JournalFileBackend(str(path))))
    return study.get_trials()


def _tell(study: optuna.Study, i: int) -> None:
    trial = study.ask(DIST)
    for k in range(15):
        trial.set_user_attr(f"attr{k}", [i, k])
    study.tell(trial, float(i))


def test_the_file_is_optunas_format_and_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "study.log"
    study = optuna.create_study(study_name="s", storage=journal_storage(path))
    study.set_user_attr("base", {"a": 1})
    for i in range(4):
        _tell(study, i)
    trials = _optuna_reads(path, "s")
    assert [t.value for t in trials] == [0.0, 1.0, 2.0, 3.0]
    assert all(t.state is COMPLETE for t in trials)
    assert trials[2].user_attrs["attr14"] == [2, 14] and "x" in trials[2].params

    again = optuna.load_study(study_name="s", storage=journal_storage(path))
    assert again.user_attrs == {"base": {"a": 1}}
    _tell(again, 4)  # appends after what the first writer wrote
    assert [t.value for t in _optuna_reads(path, "s")] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_one_write_per_told_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = journal_storage(tmp_path / "study.log")
    study = optuna.create_study(study_name="s", storage=storage)
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    trial = study.ask(DIST)
    for k in range(15):
        trial.set_user_attr(f"attr{k}", k)
    assert fsyncs == []  # an unfinished trial's operations wait
    study.tell(trial, 1.0)
    assert len(fsyncs) == 1
    commit(storage)  # nothing held: nothing written
    assert len(fsyncs) == 1


def test_commit_writes_what_an_ask_left_held(tmp_path: Path) -> None:
    path = tmp_path / "study.log"
    storage = journal_storage(path)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask(DIST)
    trial.set_user_attr("seed", 7)
    (asked,) = _optuna_reads(path, "s")  # the creation is written at once, the rest waits
    assert asked.state is RUNNING and asked.user_attrs == {} and asked.params == {}
    commit(storage)
    (found,) = _optuna_reads(path, "s")
    assert found.state is RUNNING and found.user_attrs == {"seed": 7} and "x" in found.params
    commit(optuna.storages.InMemoryStorage())  # other storages: nothing to do


_CHILD = textwrap.dedent("""
    import sys, time, optuna
    from clonesweep.orchestrator.study.journal import journal_storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=journal_storage(sys.argv[1]))
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for i in range(10_000):
        trial = study.ask(dist)
        for k in range(15):
            trial.set_user_attr(f"attr{k}", [i, k])
        study.tell(trial, float(i))
        print(i, flush=True)  # told: the parent may kill us from here on
        study.ask(dist).set_user_attr("seed", i)  # asked, not committed: may be lost
""")


def test_every_told_trial_survives_a_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "study.log"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    told = -1
    for line in child.stdout:
        told = int(line)
        if told >= 40:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    trials = _optuna_reads(path, "s")
    complete = {t.value for t in trials if t.state is COMPLETE}
    assert set(map(float, range(told + 1))) <= complete
    for t in trials:
        if t.state is COMPLETE:
            assert t.user_attrs["attr14"] == [int(t.value or 0), 14]
    # And the writer picks the file up again.
    study = optuna.load_study(study_name="s", storage=journal_storage(path))
    _tell(study, 999)
    assert 999.0 in {t.value for t in _optuna_reads(path, "s")}


_EXIT_HOLDING = textwrap.dedent("""
    import sys
    from clonesweep.orchestrator.study.journal import journal_storage
    import optuna  # after: torn down first at exit, as a command's imports often are
    storage = journal_storage(sys.argv[1])  # alive until the interpreter exits
    study = optuna.create_study(study_name="s", storage=storage)
    study.ask().suggest_float("x", 0.0, 1.0)  # held, not written: no trial finished
""")


def test_what_is_held_is_written_when_the_interpreter_exits(tmp_path: Path) -> None:
    """The backend is closed before the interpreter tears its modules down: no "Exception
    ignored in __del__" on stderr, and the asked trial's param reaches the file."""
    path = tmp_path / "study.log"
    done = subprocess.run([sys.executable, "-c", _EXIT_HOLDING, str(path)],
                          capture_output=True, text=True, timeout=120, check=True)
    assert "Exception ignored" not in done.stderr, done.stderr
    (trial,) = _optuna_reads(path, "s")
    assert trial.state is RUNNING and set(trial.params) == {"x"}


def test_a_line_cut_short_by_a_crash_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "study.log"
    study = optuna.create_study(study_name="s", storage=journal_storage(path))
    _tell(study, 0)
    del study
    with path.open("ab") as fh:
        fh.write(b'{"op_code":4,"worker_id":"w","study_id":0,"datetime_st')  # torn
    reader = optuna.load_study(study_name="s", storage=journal_storage(path))
    assert [t.value for t in reader.get_trials()] == [0.0]
    assert path.read_bytes().endswith(b"datetime_st")  # a reader changes nothing
    _tell(reader, 1)  # the first write drops the torn line
    assert [t.value for t in _optuna_reads(path, "s")] == [0.0, 1.0]


def test_a_second_reader_on_the_same_backend(tmp_path: Path) -> None:
    backend = GroupCommitJournal(tmp_path / "study.log")
    study = optuna.create_study(study_name="s", storage=JournalStorage(backend))
    _tell(study, 0)
    other = optuna.load_study(study_name="s", storage=JournalStorage(backend))
    assert [t.value for t in other.get_trials()] == [0.0]
    backend.close()
    backend.close()


def _spec(path: Path, url: str) -> Any:
    spec = load_sweep(path)
    return dataclasses.replace(spec, sweep=dataclasses.replace(spec.sweep, storage=url))


def test_a_sweep_on_the_journal_reports_and_resumes(tmp_path: Path, sweep_file: Any) -> None:
    url = f"journal://{tmp_path / 'journal' / 'study.log'}"
    spec = _spec(sweep_file(name="jr", trials=2, epochs=1), url)
    first = run_sweep(spec, base_model_config(spec), InProcessBackend())
    assert first.counts.complete == 2 and storage_url(spec) == url

    status = status_payload(spec)
    assert status["finished"] == status["complete"] == 2
    best = best_payload(spec)["best"]
    assert first.best is not None and best["number"] == first.best.number

    # optuna-dashboard gets the plain path and reads it with Optuna's own backend.
    from optuna_dashboard._storage_url import get_storage

    dash = get_storage(dashboard_storage(url))
    (frozen,) = dash.get_all_studies()
    assert frozen.study_name == "jr"
    assert len(dash.get_all_trials(frozen._study_id)) == 2

    spec = _spec(sweep_file(name="jr", trials=3, epochs=1), url)
    second = run_sweep(spec, base_model_config(spec), InProcessBackend())
    assert second.counts.finished == 1 and second.already_finished == 2
    trials = _optuna_reads(Path(url[len("journal://"):]), "jr")
    assert [t.state for t in trials] == [COMPLETE] * 3
    assert all("seed" in t.user_attrs and "history" in t.user_attrs for t in trials)


def test_enqueued_trials_are_still_popped(tmp_path: Path) -> None:
    path = tmp_path / "study.log"
    study = optuna.create_study(study_name="s", storage=journal_storage(path))
    _tell(study, 0)  # no waiting trial: ask skips the scan
    study.enqueue_trial({"x": 0.25})
    study.enqueue_trial({"x": 0.75})
    reopened = optuna.load_study(study_name="s", storage=journal_storage(path))
    first = reopened.ask(DIST)
    second = reopened.ask(DIST)
    assert (first.params["x"], second.params["x"]) == (0.25, 0.75)
    for trial in (first, second):
        reopened.tell(trial, 1.0)
    _tell(reopened, 3)
    assert len(_optuna_reads(path, "s")) == 4


_WRITER = textwrap.dedent("""
    import sys, optuna
    from clonesweep.orchestrator.study.journal import journal_storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=sys.argv[2], storage=journal_storage(sys.argv[1]),
                                load_if_exists=True)
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for i in range(3):
        trial = study.ask(dist)
        trial.set_user_attr("by", "other")
        study.tell(trial, 100.0 + i)
""")


def test_another_process_writing_between_asks_keeps_ids_apart(tmp_path: Path) -> None:
    # A driver holds an asked trial; another process creates a study and trials in the same
    # file (an ensemble, a refused second driver); then a dashboard note (Optuna's own
    # backend). Every reader must replay the file to the same trials the driver holds.
    path = tmp_path / "study.log"
    storage = journal_storage(path)
    study = optuna.create_study(study_name="s", storage=storage)
    held = study.ask(DIST)
    held.set_user_attr("by", "driver")
    for name in ("other", "s"):  # a new study, then a second writer of the driver's own
        subprocess.run([sys.executable, "-c", _WRITER, str(path), name], check=True)
    dash = optuna.load_study(study_name="s",
                             storage=JournalStorage(JournalFileBackend(str(path))))
    dash.set_user_attr("note", "from the dashboard")
    later = study.ask(DIST)
    study.tell(held, 1.0)
    study.tell(later, 2.0)

    mine = {t.number: (t.value, t.user_attrs.get("by")) for t in study.get_trials()}
    for read in (_optuna_reads(path, "s"),
                 optuna.load_study(study_name="s", storage=journal_storage(path)).get_trials()):
        assert {t.number: (t.value, t.user_attrs.get("by")) for t in read} == mine
    assert mine[0] == (1.0, "driver") and sorted(v for v, _ in mine.values()) == \
        [1.0, 2.0, 100.0, 101.0, 102.0]
    assert [t.value for t in _optuna_reads(path, "other")] == [100.0, 101.0, 102.0]
    assert study.user_attrs["note"] == "from the dashboard"
