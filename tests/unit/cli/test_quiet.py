"""Quiet and clear: no library banners unless --verbose, checks before Ray, named metrics."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from clonesweep.cli.main import main
from clonesweep.cli.quiet import (
    NATIVE_LINE,
    native_lines_filtered,
    native_stderr_muted,
    quiet_logs,
)
from clonesweep.spec import load_sweep


@pytest.fixture
def restore_logging() -> Iterator[None]:
    names = ("ray._private.authentication", "optuna")
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_native_stderr_is_muted_and_replayed_on_error(capfd: pytest.CaptureFixture[str]) -> None:
    with native_stderr_muted():
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on\n")
    assert "oneDNN" not in capfd.readouterr().err
    with pytest.raises(ImportError), native_stderr_muted():
        os.write(2, b"why the import failed\n")
        raise ImportError("broken")
    assert "why the import failed" in capfd.readouterr().err


def test_native_lines_are_dropped_and_others_pass(capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    with native_lines_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n")
        os.write(2, b"I0000 00:00:1796517845.281354   26375 port.cc:153] oneDNN custom "
                    b"operations are on.\n")
        os.write(2, b"a line of the caller's\n")
        os.write(2, b"E0000 00:00:1796517862.423789   26375 cuda_platform.cc:52] failed call "
                    b"to cuInit: INTERNAL: CUDA error\n")
        os.write(2, b"UserWarning: another line of the caller's\n")
    err = capfd.readouterr().err
    assert err == "a line of the caller's\nUserWarning: another line of the caller's\n"
    os.write(2, b"after the block\n")  # descriptor 2 is the real one again
    assert capfd.readouterr().err == "after the block\n"


_API_RUN = """
import sys
import clonesweep
verbose = sys.argv[2] == "verbose"
result = clonesweep.run(sys.argv[1], backend="inprocess", progress=False, verbose=verbose)
clonesweep.ensemble(sys.argv[1], members=2, trial="best", backend="inprocess",
                    verbose=verbose)
print(result.best.number)
"""


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_the_python_api_leaves_no_tensorflow_lines_on_stderr(tmp_path: Path,
                                                            mode: str) -> None:
    """clonesweep.run and clonesweep.ensemble from Python, Keras first imported inside the
    call: stderr holds none of TensorFlow's native lines (absl, oneDNN, the CUDA probe),
    which verbose=True shows (so the check can fail)."""
    from tests_support import write_sweep

    path = write_sweep(tmp_path, trials=2, epochs=1, limit=200)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", _API_RUN, str(path), mode], cwd=tmp_path,
                          env=env, capture_output=True, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    native = [line for line in done.stderr.splitlines() if NATIVE_LINE.match(line)]
    if mode == "verbose":
        assert any(b"oneDNN" in line for line in native), done.stderr[-3000:]
    else:
        assert native == [] and b"oneDNN" not in done.stderr, done.stderr[-3000:]


def test_quiet_logs_hide_rays_notice_and_optunas_info(restore_logging: None) -> None:
    quiet_logs()
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    assert not notice.isEnabledFor(logging.WARNING) and notice.isEnabledFor(logging.ERROR)
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING


def test_validate_prints_no_tensorflow_banner(sweep_file: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-m", "clonesweep", "validate",
                           str(sweep_file())], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "OK, nothing created" in done.stdout
    assert done.stderr == ""  # no absl / oneDNN lines, no Optuna INFO


def test_second_ensemble_is_refused_before_ray_starts(sweep_file: Any, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    ray_before = ray.is_initialized()  # an earlier test of the session may have left one up
    path = sweep_file()
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    url = f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'study.db'}"
    used = optuna.create_study(study_name="tiny-ensemble", storage=url, direction="maximize")
    used.add_trial(optuna.trial.create_trial(value=0.5))
    assert main(["ensemble", str(path), "--members", "2"]) == 2
    err = capsys.readouterr().err
    assert "'tiny-ensemble' already holds trials" in err and "--study" in err
    assert ray.is_initialized() == ray_before


def test_every_study_names_its_metrics(sweep_file: Any) -> None:
    from clonesweep.orchestrator.study.storage import open_study, storage_url

    spec = load_sweep(sweep_file())
    spec.run_folder.mkdir(parents=True)
    study = open_study(spec, storage_url(spec))
    assert study.metric_names == ["val_accuracy"]  # optuna-dashboard's axis, not "Objective 0"
    again = open_study(spec, storage_url(spec))
    assert again.metric_names == ["val_accuracy"]
