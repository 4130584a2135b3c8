"""The image's install step, run for real: deploy/Dockerfile's ``pip install`` RUN step, as
written, in a fresh virtual environment (no Docker engine needed), on a copy of what the
Dockerfile COPYs; then a Ray cluster started from that environment only.

Checked there: the KubeRay manifests' probe commands succeed against the head and the worker
node (their ports replaced by this cluster's), ``ray list nodes`` and ``ray job submit``
work, and a sweep submitted as a job finishes (``clonesweep status`` from the same
environment reads it back). This is the CPU image (the Dockerfile's default EXTRAS); the GPU
variant's CUDA wheels (several GB) are not installed here.

The install downloads TensorFlow and Ray (~1 GB of wheels, no pip cache, as in the image):
about a minute here, hence ``slow``; the default run (.ci/run) deselects no marker, so CI runs
it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import DEPLOY, probe_commands

from cluster_support import LocalCluster
from tests_support import REPO, write_sweep

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]


def _dockerfile() -> tuple[str, list[tuple[list[str], str]], str]:
    """The default EXTRAS, the COPY lines (sources, destination) and the pip install step."""
    text = re.sub(r"^\s*#.*\n", "", (DEPLOY / "Dockerfile").read_text(), flags=re.M)
    extras = re.search(r"^ARG EXTRAS=(\S+)$", text, re.M)
    assert extras
    copies = [(line.split()[1:-1], line.split()[-1])
              for line in re.findall(r"^COPY [^\n]+$", text, re.M)]
    steps = [s.replace("\\\n", " ") for s in
             re.findall(r"^RUN (.*?)(?<!\\)\n", text, flags=re.M | re.S)]
    (install,) = [s for s in steps if "pip install" in s]
    return extras.group(1), copies, install


@pytest.fixture(scope="module")
def image_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment holding what the image's install step installs."""
    root = tmp_path_factory.mktemp("image")
    extras, copies, install = _dockerfile()
    context = root / "opt-clonesweep"  # the image's WORKDIR
    context.mkdir()
    for sources, dest in copies:
        for source in sources:
            target = context / dest / source if dest.endswith("/") else context / dest
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target,
                                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / source, target)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(EXTRAS=extras, PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    started = time.monotonic()
    done = subprocess.run(["sh", "-c", install], cwd=context, env=env, capture_output=True,
                          text=True, timeout=1200)
    minutes = (time.monotonic() - started) / 60
    assert done.returncode == 0, (f"the install step failed after {minutes:.1f} min:\n"
                                  + (done.stdout + done.stderr)[-5000:])
    print(f"image install step: {minutes:.1f} min")
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def cluster(image_python: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(python=str(image_python))
    try:
        c.start([["--num-cpus=1"]], dashboard=True)
        yield c
    finally:
        c.stop()


def _wait_ok(command: str, env: dict[str, str], what: str, timeout: float = 120.0) -> None:
    """Run ``command`` until it exits 0 (a node's agent may answer a moment after start)."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True,
                              timeout=60)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} failed for {timeout:g} s: {command}\n"
                                 f"{done.stdout[-1000:]}{done.stderr[-1000:]}")
        time.sleep(2.0)


def test_the_manifests_probes_pass_in_the_image_environment(cluster: LocalCluster) -> None:
    if shutil.which("wget") is None:
        pytest.skip("no wget here (the image installs it)")
    dashboard_port = cluster.dashboard_url.rsplit(":", 1)[1]
    for kind, node in (("head", "head"), ("worker", "worker0")):
        command = (probe_commands()[kind]
                   .replace("localhost:52365", f"localhost:{cluster.agent_ports[node]}")
                   .replace("localhost:8265", f"localhost:{dashboard_port}"))
        _wait_ok(command, cluster.env, f"the {kind} probe")


def test_ray_cli_and_a_submitted_sweep_work_in_the_image_environment(
        cluster: LocalCluster, image_python: Path, tmp_path: Path) -> None:
    bin_dir = image_python.parent
    env = cluster.env
    nodes = subprocess.run([str(bin_dir / "ray"), "list", "nodes", "--format", "json",
                            "--address", cluster.dashboard_url],
                           env=env, capture_output=True, text=True, timeout=120)
    assert nodes.returncode == 0, nodes.stderr[-3000:]
    assert len([n for n in json.loads(nodes.stdout) if n["state"] == "ALIVE"]) == 2

    folder = tmp_path / "job"
    folder.mkdir()
    sweep = write_sweep(folder, name="image", trials=2, parallel=1, epochs=1, limit=200,
                        run_dir=tmp_path / "runs")
    done = subprocess.run(
        [str(bin_dir / "ray"), "job", "submit", "--address", cluster.dashboard_url,
         "--working-dir", str(folder), "--", "clonesweep", "run", sweep.name],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:] + cluster.logs()

    status = subprocess.run([str(bin_dir / "clonesweep"), "status", str(sweep), "--json"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr[-3000:]
    counts = json.loads(status.stdout)
    assert counts["complete"] == 2 and counts["failed"] == 0, counts
    # The sweep ran on the worker node's clonesweep: the one the image installed.
    assert str(image_python.parent.parent) in subprocess.run(
        [str(image_python), "-c", "import clonesweep; print(clonesweep.__file__)"],
        env=env, capture_output=True, text=True, timeout=120).stdout
