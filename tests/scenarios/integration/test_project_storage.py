"""A project storage (``sweep.project``, ``--project``, ``$CLONESWEEP_PROJECT``): one SQLite
file holding many sweeps, each the study of its name, found by the commands and listed side
by side by optuna-dashboard. Sweeps one after the other and two at once (two driver
processes) on the same file. Trials are scripted (FakeBackend): the storage is the subject.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from clonesweep.cli.main import main
from clonesweep.errors import SpecError
from clonesweep.orchestrator import base_model_config
from clonesweep.orchestrator.sweep import run_sweep
from clonesweep.orchestrator.testing import Complete, FakeBackend
from clonesweep.spec import load_sweep
from clonesweep.spec.settings import with_project
from tests_support import write_sweep

S = optuna.trial.TrialState


def _file(folder: Path, name: str, trials: int = 3, project: str = "../lab.db") -> Path:
    folder.mkdir(exist_ok=True)
    extra = f"\n  project: {project}" if project else ""
    return write_sweep(folder, name=name, trials=trials, sweep_extra=extra)


def _dashboard_studies(url: str) -> list[str]:
    """The study names optuna-dashboard's own API lists for the storage."""
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    environ: dict[str, Any] = {"PATH_INFO": "/api/studies", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    statuses: list[str] = []
    body = b"".join(wsgi(url)(environ, lambda status, headers, *_: statuses.append(status)))
    assert statuses == ["200 OK"], body[-2000:]
    return sorted(s["study_name"] for s in json.loads(body)["study_summaries"])


def test_two_sweeps_in_one_project_side_by_side(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    specs = [load_sweep(_file(tmp_path / name, name)) for name in ("mlp-a", "mlp-b")]
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    for spec, value in zip(specs, (0.7, 0.8), strict=True):
        assert spec.sweep.storage == url and spec.sweep.project == "../lab.db"
        outcome = run_sweep(spec, base_model_config(spec),
                            FakeBackend({n: Complete(value=value) for n in range(3)}))
        assert outcome.counts.complete == 3 and outcome.storage == url
    assert sorted(optuna.get_all_study_names(url)) == ["mlp-a", "mlp-b"]
    assert _dashboard_studies(url) == ["mlp-a", "mlp-b"]
    # Each sweep's own folder holds no study of its own: the project does.
    assert not (specs[0].run_folder / "study.db").exists()
    # The commands find each sweep in the project from its file alone.
    assert main(["best", str(specs[1].file), "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["storage"] == url and best["best"]["val_accuracy"] == pytest.approx(0.8)


def test_the_project_flag_and_environment_find_a_sweep(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path / "s", "plain", project="")  # the file names no storage
    spec = load_sweep(path)
    project = tmp_path / "shared.db"
    monkeypatch.chdir(tmp_path)
    in_project = dataclasses.replace(spec, sweep=with_project(
        spec.sweep, "shared.db", tmp_path, file="--project", field="--project"))
    run_sweep(in_project, base_model_config(spec), FakeBackend({}))
    assert main(["status", str(path), "--json", "--project", "shared.db"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] == 3
    monkeypatch.setenv("CLONESWEEP_PROJECT", str(project))
    assert main(["status", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] == 3
    # --storage wins over the environment (here: a file with no study in it -> exit 1).
    assert main(["status", str(path), "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 1
    assert main(["status", str(path), "--project", "lab.log"]) == 2
    assert "journal file cannot hold a project" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "text"), [
    ("project: lab.db\n  storage: 'sqlite:///x.db'", "not both"),
    ("project: lab.log", "journal file cannot hold a project"),
    ("project: 'journal://lab.journal'", "journal file"),
    ("project: lab.txt", "not a project storage"),
    ("project: 'http://x/y'", "expected an Optuna storage URL"),
])
def test_bad_projects_name_the_field(tmp_path: Path, extra: str, text: str) -> None:
    path = write_sweep(tmp_path, sweep_extra=f"\n  {extra}")
    with pytest.raises(SpecError) as info:
        load_sweep(path)
    assert info.value.field == "sweep.project" and text in str(info.value), str(info.value)


_DRIVER = """
import sys, time
from pathlib import Path
from clonesweep.orchestrator import base_model_config
from clonesweep.orchestrator.sweep import run_sweep
from clonesweep.orchestrator.testing import Complete, FakeBackend
from clonesweep.spec import load_sweep

spec = load_sweep(sys.argv[1])
base = base_model_config(spec)
Path(sys.argv[2]).touch()  # ready; wait for the other driver, then both write at once
while not Path(sys.argv[3]).exists():
    time.sleep(0.01)
outcome = run_sweep(spec, base, FakeBackend({}))
print(outcome.counts.complete)
"""


def test_two_sweeps_write_one_project_at_once(tmp_path: Path) -> None:
    paths = [_file(tmp_path / name, name, trials=30) for name in ("left", "right")]
    ready = [tmp_path / f"{name}.ready" for name in ("left", "right")]
    drivers = [subprocess.Popen([sys.executable, "-c", _DRIVER, str(path), str(mine),
                                 str(other)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for path, mine, other in zip(paths, ready, ready[::-1], strict=True)]
    outs = [d.communicate(timeout=300) for d in drivers]
    for driver, (out, err) in zip(drivers, outs, strict=True):
        assert driver.returncode == 0, err.decode()[-3000:]
        assert out.decode().split()[-1] == "30"
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    spans = []
    for name in ("left", "right"):
        trials = optuna.load_study(study_name=name, storage=url).get_trials()
        assert [t.number for t in trials] == list(range(30))
        assert all(t.state is S.COMPLETE for t in trials)
        spans.append((min(t.datetime_start for t in trials),
                      max(t.datetime_complete for t in trials)))
    # The two sweeps did write at the same time (else this test proved nothing).
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans
    assert _dashboard_studies(url) == ["left", "right"]
