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
from clonesweep.cli.quiet import native_stderr_muted, quiet_logs
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
