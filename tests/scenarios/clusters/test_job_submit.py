"""``ray job submit`` exactly as deploy/README.md writes it, on a real cluster on 127.0.0.1.

The guide's tested block (the ``bash`` block after the ``tested by`` marker) runs as written,
with only the addresses and the password file's path replaced by this cluster's: a head with
no CPUs running Ray's dashboard and job server (``ray[default]``, the ``cluster`` extra), one
worker node, token authentication on, the study in a real PostgreSQL server. The sweep's data
loader lives in the submitted folder only (``mydata.py``), so the trials completing shows the
job's working directory reached the workers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster_support import LocalCluster
from pgserver import PostgresServer
from tests_support import REPO, missing, write_sweep

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

GUIDE = REPO / "deploy" / "README.md"
MARK = "<!-- tested by tests/scenarios/clusters/test_job_submit.py -->"


def guide_block() -> str:
    """The guide's ``bash`` block right after the marker."""
    _, marked, after = GUIDE.read_text().partition(MARK)
    assert marked, f"{GUIDE.name} lost its marker {MARK!r}"
    found = re.match(r"\s*```bash\n(.*?)```", after, re.S)
    assert found, "the marker must stand right before a ```bash block"
    return found.group(1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    try:
        import ray.dashboard.optional_deps  # noqa: F401  (Ray's own "can the dashboard run")
    except ImportError as exc:
        missing(f"Ray's minimal install here, no job server (the test extra has "
                f"ray[default]): {exc}")
    with LocalCluster() as c:
        # `ray` and `clonesweep` of this interpreter first on PATH, for the guide's commands.
        c.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{c.env.get('PATH', '')}"
        c.start([["--num-cpus=2"]], dashboard=True)
        yield c


def _project(folder: Path, run_dir: Path) -> Path:
    """The user's folder the guide submits: sweep.yaml, model.json and mydata.py."""
    folder.mkdir()
    write_sweep(folder, name="submitted", trials=4, parallel=2, epochs=1, limit=200,
                loader="mydata:load", run_dir=run_dir).rename(folder / "sweep.yaml")
    (folder / "mydata.py").write_text(
        '"""The user\'s own loader: installed on no node, it travels with the job."""\n'
        "from clonesweep.datasets import digits\n\n\n"
        "def load(limit: int):\n"
        "    return digits(limit=limit)\n")
    return folder


def test_the_guides_job_submission_runs_the_sweep(cluster: LocalCluster, pg: PostgresServer,
                                                  tmp_path: Path) -> None:
    import optuna
    from sqlalchemy.engine import make_url

    _project(tmp_path / "my-sweep", tmp_path / "runs")
    password_file = tmp_path / "pg-password"
    password_file.write_text(pg.password + "\n")
    password_file.chmod(0o600)
    url = make_url(pg.url)
    block = guide_block()
    for placeholder, value in (
            ("http://127.0.0.1:8265", cluster.dashboard_url),
            ("sweeper@db.internal:5432", f"{url.username}@127.0.0.1:{url.port}"),
            ("/home/ray/.pg-password", str(password_file))):
        assert placeholder in block, placeholder
        block = block.replace(placeholder, value)

    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path,
                          env=cluster.env, capture_output=True, text=True, timeout=500)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:] + cluster.logs()
    assert "succeeded" in output, output[-3000:]

    study = optuna.load_study(study_name="submitted", storage=pg.url)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4, output[-3000:]
    # Each trial names the host it ran on, then Ray's node id.
    host = socket.gethostname()
    assert all(t.user_attrs["node"].startswith(f"{host}/") for t in trials)
    # The run folder went where the sweep file says (not into the job's working dir copy).
    summary = json.loads((tmp_path / "runs" / "submitted" / "summary.json").read_text())
    assert summary["complete"] == 4
    # The password went through the file only: not in the job's record or its output.
    assert pg.password not in output
    # `status` counts the finished trials per host.
    status = subprocess.run(
        [sys.executable, "-m", "clonesweep", "status", "sweep.yaml", "--json",
         "--storage", f"postgresql+psycopg2://{url.username}@127.0.0.1:{url.port}/studies",
         "--storage-password-file", str(password_file)],
        cwd=tmp_path / "my-sweep", env=cluster.env, capture_output=True, text=True,
        timeout=300)
    assert status.returncode == 0, status.stderr[-3000:]
    assert json.loads(status.stdout)["hosts"] == {host: {"complete": 4}}


def test_a_client_without_the_token_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    """What the guide says of tokens: the head refuses a client that has no RAY_AUTH_MODE."""
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    ray = shutil.which("ray", path=env["PATH"])
    assert ray
    done = subprocess.run([ray, "job", "list", "--address", cluster.dashboard_url],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "authentication" in (done.stdout + done.stderr).lower()
