"""diff, repro, report and dashboard on a real finished sweep (real Ray, real Keras)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest

from clonesweep.cli.main import main
from clonesweep.orchestrator import base_model_config, run_sweep
from clonesweep.orchestrator.backends.ray.backend import RayBackend
from clonesweep.orchestrator.commands.inspect import config_diff, trial_diff
from clonesweep.orchestrator.commands.report import open_study_of
from clonesweep.spec import load_sweep
from tests_support import REPO, write_sweep

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def finished(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 4-trial sweep run on the session's Ray cluster, one trial pruned."""
    folder = tmp_path_factory.mktemp("inspect")
    path = write_sweep(folder, name="inspected", trials=4, parallel=2, epochs=2,
                       parameters="""
  layers.hidden.units: {values: [8, 24]}
  optimizer.learning_rate: {values: [0.000001, 0.03]}""",
                       sweep_extra="\n  pruner: {name: threshold, lower: 0.3}")
    spec = load_sweep(path)
    run_sweep(spec, base_model_config(spec), RayBackend(resources=spec.sweep.resources))
    return path, spec, open_study_of(spec)


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clonesweep", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _by_state(study: optuna.Study, state: optuna.trial.TrialState) -> list[Any]:
    return [t for t in study.get_trials() if t.state is state]


def test_diff_is_keyed_by_search_space_paths(finished: Any) -> None:
    _, spec, study = finished
    trial = study.get_trials()[0]
    changes = {c.path: (c.before, c.after) for c in trial_diff(spec, study, trial.number)}
    units = trial.params["layers.hidden.units"]
    assert changes.get("layers.hidden.units") == (64, units)  # the base has 64 units
    assert changes["optimizer.learning_rate"] == (0.003, trial.params["optimizer.learning_rate"])
    assert not any(p.endswith(".seed") for p in changes), "seeds hidden by default"
    with_seeds = trial_diff(spec, study, trial.number, seeds=True)
    assert any(c.path == "layers.hidden.kernel_initializer.config.seed" for c in with_seeds)


def test_diff_between_two_trials_and_from_the_cli(finished: Any,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, spec, study = finished
    a, b = study.get_trials()[:2]
    changes = trial_diff(spec, study, a.number, b.number)
    assert all(c.before != c.after for c in changes)
    if a.params == b.params:
        assert changes == []
    assert main(["diff", str(path), str(a.number), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["against"] == "base" and payload["changes"]


def test_config_diff_reports_added_layers() -> None:
    base = json.loads((REPO / "configs" / "digits_mlp.json").read_text())
    other = json.loads(json.dumps(base))
    other["config"]["layers"].append({"class_name": "Dense", "config": {"name": "extra"}})
    assert [(c.path, c.after) for c in config_diff(base, other)] == [("layers.extra", "Dense")]


def test_repro_rebuilds_with_the_same_hash(finished: Any,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path, _, study = finished
    number = _by_state(study, optuna.trial.TrialState.COMPLETE)[0].number
    assert main(["repro", str(path), str(number), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["hash_match"] and report["ok"] and not report["trained"]


@pytest.mark.parametrize("state", [optuna.trial.TrialState.COMPLETE,
                                   optuna.trial.TrialState.PRUNED])
def test_repro_train_is_bitwise_on_cpu(finished: Any, state: optuna.trial.TrialState) -> None:
    path, _, study = finished
    trials = _by_state(study, state)
    assert trials, f"the fixture sweep has no {state.name} trial"
    done = cli("repro", str(path), str(trials[0].number), "--train", "--json", cwd=path.parent)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["ok"] and report["history_match"] and report["data_match"]
    assert report["value"] == report["stored_value"]  # bitwise, not approx
    assert report["environment_diff"] == {}


def test_report_page_renders_its_plots_in_chromium(finished: Any, tmp_path: Path,
                                                    ray_cluster: str) -> None:
    path, _, _ = finished
    # An ensemble of the best trial adds the members-against-ensemble section.
    ens = cli("ensemble", str(path), "--members", "2", "--from-best", "--address", ray_cluster,
              cwd=path.parent)
    assert ens.returncode == 0, ens.stdout + ens.stderr[-2000:]
    out = tmp_path / "report.html"
    assert main(["report", str(path), "--out", str(out)]) == 0
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=20000", "--dump-dom", out.as_uri()],
        capture_output=True, text=True, timeout=180).stdout
    sections = dom.split('<section class="plot">')[1:]
    # Learning curves, Optuna's 6 plots, the ensembles' spread (test_report.py checks the page
    # part by part on the in-process backend).
    assert len(sections) == 8, dom[:500]
    for section in sections:
        # plotly draws each figure into an <svg class="main-svg"> once its script has run;
        # a plot that does not apply to this sweep says why instead.
        assert 'class="main-svg"' in section or "Not drawn:" in section, section[:300]
    assert "Best trial #" in dom and "layers.hidden.units" in dom
    assert "<h3>inspected-ensemble</h3>" in dom and "2 of 2" in dom and "ensemble 0." in dom


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dashboard_serves_the_study_on_loopback(finished: Any) -> None:
    path, _, _ = finished
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "clonesweep", "dashboard", str(path),
                             "--port", str(port), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=path.parent)
    try:
        assert proc.stdout is not None
        announced = json.loads(proc.stdout.readline())
        assert announced["url"] == f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies",
                                            timeout=5) as reply:
                    studies = json.loads(reply.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "dashboard did not come up"
                time.sleep(0.5)
        assert "inspected" in json.dumps(studies)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
