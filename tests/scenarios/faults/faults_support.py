"""Drivers as separate ``python -m clonesweep`` processes, each with its own embedded Ray.

Every process a test starts carries a marker in its environment and a private
``RAY_TMPDIR``, so its embedded Ray never joins another cluster on the machine, and
:func:`kill_marked` kills exactly those processes (never ``ray stop``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna

from tests_support import pids_with_env

MARKER = "CLONESWEEP_TEST_FAULTS"


def marked_pids(marker: str) -> list[int]:
    return pids_with_env(MARKER, marker)


def kill_marked(marker: str) -> None:
    for pid in marked_pids(marker):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class Drivers:
    """Starts ``clonesweep`` commands in ``cwd``; ``close()`` kills whatever is left."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.marker = uuid.uuid4().hex
        self.temp = Path(tempfile.mkdtemp(prefix="csflt-", dir="/tmp"))
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("RAY_ADDRESS", "CLONESWEEP_STORAGE_PASSWORD")}
        self.env.update({MARKER: self.marker, "RAY_TMPDIR": str(self.temp),
                         "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "3",
                         "PYTHONUNBUFFERED": "1"})

    def start(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "clonesweep", *argv], cwd=self.cwd,
                                env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "clonesweep", *argv], cwd=self.cwd,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def close(self) -> None:
        kill_marked(self.marker)
        import shutil

        shutil.rmtree(self.temp, ignore_errors=True)


def trials(run_folder: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    """The trials of study ``name`` in a run folder's default storage (the journal, or the
    SQLite file of an older run folder), read without writing; [] before it exists."""
    from clonesweep.orchestrator.study.journal import journal_storage

    journal, db = run_folder / "study.log", run_folder / "study.db"
    try:
        if journal.exists():
            # Read only: the reader appends nothing (the driver is the file's writer).
            study = optuna.load_study(study_name=name, storage=journal_storage(journal))
        elif db.exists():
            # Read-only: a poller that opened the file read-write while the driver was
            # creating it would create the schema too, and the two collided.
            study = optuna.load_study(study_name=name,
                                      storage=f"sqlite:///file:{db}?mode=ro&uri=true")
        else:
            return []
    except Exception:  # not created yet
        return []
    return study.get_trials(deepcopy=False)


def assert_invariants(all_trials: list[optuna.trial.FrozenTrial], budget: int) -> None:
    """Each trial finished in exactly one state; the budget is met exactly, not counting
    trials failed as driver_died / interrupted; each of those was re-queued once, with the
    same params and seed, and that re-run finished."""
    from clonesweep.orchestrator.study.resume import REQUEUED_REASONS, counted

    S = optuna.trial.TrialState
    assert all(t.state in (S.COMPLETE, S.PRUNED, S.FAIL) for t in all_trials), \
        [(t.number, t.state) for t in all_trials]
    for t in all_trials:
        if t.state is S.FAIL:
            assert t.user_attrs.get("fail_reason"), t.number
    assert sum(counted(t) for t in all_trials) == budget
    by_number = {t.number: t for t in all_trials}
    for t in all_trials:
        if t.user_attrs.get("fail_reason") in REQUEUED_REASONS:
            reruns = [r for r in all_trials if r.user_attrs.get("requeued_from") == t.number]
            assert len(reruns) == 1, (t.number, [r.number for r in reruns])
            rerun = reruns[0]
            assert rerun.params == t.params
            assert rerun.user_attrs["seed"] == t.user_attrs["seed"]
            assert rerun.number in by_number and rerun.number > t.number
