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


@pytest.mark.integration
def test_cli_run_status_best_end_to_end(ray_cluster: str, sweep_file: Any,
                                        tmp_path: Path) -> None:
    path = sweep_file(trials=3, parallel=2, epochs=2)
    done = run_cli("run", str(path), "--address", ray_cluster, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
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
