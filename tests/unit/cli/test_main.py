"""The command line: exit codes, bad input, and a real run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clonesweep.cli.main import main
from tests_support import counting_loader


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 420) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "clonesweep", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def test_bad_input_exits_2_and_creates_nothing(tmp_path: Path, sweep_file: Any,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_file(epochs=0)
    assert main(["run", str(path), "--backend", "inprocess"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "training.epochs" in err and "0" in err
    assert not (tmp_path / "runs").exists()


def test_bad_flag_value_exits_2(sweep_file: Any) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", str(sweep_file()), "--trials", "0"])
    assert info.value.code == 2


def test_bad_storage_flag_exits_2(tmp_path: Path, sweep_file: Any,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(sweep_file()), "--storage", "redis://nowhere"]) == 2
    assert "--storage" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_version_and_user_facing_help(capsys: pytest.CaptureFixture[str]) -> None:
    from clonesweep import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"clonesweep {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "clonesweep validate FILE" in text and "exit codes" in text
    assert "parse -> spec" not in text  # the module docstring is for developers


def test_status_of_a_sweep_that_never_ran_exits_1(sweep_file: Any, tmp_path: Path) -> None:
    assert main(["status", str(sweep_file())]) == 1
    assert not (tmp_path / "runs" / "tiny").exists()  # no storage file created


def test_run_calls_the_data_loader_once(sweep_file: Any, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The check of the data (validate --data's) and the trials use the same one call.
    loader, calls = counting_loader(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = sweep_file(trials=2, epochs=1, loader=loader)
    assert main(["run", str(path), "--backend", "inprocess"]) == 0
    assert calls.read_text().splitlines() == [str(os.getpid())]


def test_ensemble_refuses_what_run_refuses_before_anything_exists(
        sweep_file: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    ray_before = ray.is_initialized()
    path = sweep_file(loss="sparse_categorical_crossentropi")
    assert main(["ensemble", str(path), "--members", "2"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "training.loss" in err and "sparse_categorical_crossentropi" in err
    assert not (tmp_path / "runs").exists()
    assert ray.is_initialized() == ray_before


def test_ensemble_calls_the_data_loader_once(sweep_file: Any, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    loader, calls = counting_loader(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = sweep_file(epochs=1, loader=loader)
    assert main(["ensemble", str(path), "--members", "2", "--backend", "inprocess"]) == 0
    assert calls.read_text().splitlines() == [str(os.getpid())]


@pytest.mark.integration
def test_cli_run_status_best_end_to_end(ray_cluster: str, sweep_file: Any,
                                        tmp_path: Path) -> None:
    # The loader is importable on the driver only: its arrays reach the workers through the
    # object store, from its one call on the driver (the data check's).
    loader, calls = counting_loader(tmp_path)
    path = sweep_file(trials=3, parallel=2, epochs=2, loader=loader)
    done = run_cli("run", str(path), "--address", ray_cluster, "--json", cwd=tmp_path,
                   env={"PYTHONPATH": os.pathsep.join(
                       p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(calls.read_text().splitlines()) == 1
    events = [json.loads(line) for line in done.stdout.splitlines()]  # JSON lines, each strict
    assert events[0]["event"] == "run_started" and events[-1]["event"] == "summary"
    assert sum(e["event"] == "trial_finished" for e in events) == 3
    assert any(e["event"] == "epoch" for e in events)
    outcome = events[-1]
    assert outcome["complete"] + outcome["pruned"] + outcome["failed"] == 3
    assert outcome["best"] is not None
    # Piped, the progress is plain lines: one per finished trial, no terminal escapes.
    assert "\x1b[" not in done.stderr
    assert "best: trial" in done.stderr

    status = run_cli("status", str(path), "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert counts["finished"] == 3 and counts["running"] == 0

    best = run_cli("best", str(path), "--json", cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    payload = json.loads(best.stdout)["best"]
    assert payload["number"] == outcome["best"]["number"]
    assert Path(payload["model_file"]).exists() and Path(payload["config_file"]).exists()
