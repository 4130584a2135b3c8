"""Budgets in plain words: --trials, --add-trials, resume, status and a met budget."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from clonesweep.cli.main import main


def _status(path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["status", str(path), "--json"]) == 0
    payload: dict = json.loads(capsys.readouterr().out)
    return payload


def test_budgets_follow_the_study_and_a_met_budget_starts_nothing(
        sweep: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    # Another test of the session may have left its Ray up: the check is that this run
    # leaves Ray as it found it (a started backend inits it, and shuts down one it started).
    ray_before = ray.is_initialized()
    path = sweep(name="budget", trials=4)
    inproc = ["--backend", "inprocess"]
    assert main(["run", str(path), "--trials", "2", *inproc]) == 0
    out = capsys.readouterr().out
    assert "sweep budget: 2 trials" in out  # the header shows the run's budget
    status = _status(path, capsys)
    assert status["budget"] == 2 and status["budget_met"]

    # resume continues to the budget the study holds (2), not the file's 4: met already.
    # The default backend is Ray: a met budget must not start it.
    assert main(["resume", str(path)]) == 0
    out = capsys.readouterr().out
    assert "budget met (2 trials); use --add-trials N" in out
    assert "best: trial" in out
    assert ray.is_initialized() == ray_before

    # --add-trials N: N more than the study has finished.
    assert main(["run", str(path), "--add-trials", "1", "--json", *inproc]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])  # JSON lines: summary last
    assert summary["budget"] == 3 and summary["complete"] + summary["pruned"] == 1
    assert "sweep budget: 3 trials, 1 at a time" in captured.err
    status = _status(path, capsys)
    assert status["budget"] == 3 and status["finished"] == 3

    # A plain run aims for the file's sweep.trials (4).
    assert main(["run", str(path), *inproc]) == 0
    capsys.readouterr()
    assert _status(path, capsys)["finished"] == 4
    assert main(["run", str(path), "--json"]) == 0
    met = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert met["note"].startswith("budget met (4 trials)") and met["best"] is not None
    assert ray.is_initialized() == ray_before
