"""A real multi-node Ray cluster on 127.0.0.1, a separate driver, the study in PostgreSQL.

Three ``ray start --block`` processes make the cluster: a head with no CPUs (it hosts only the
GCS and the pruning broker), node A with one CPU, node B with one CPU and one logical GPU.
The sweep runs from a separate ``python -m clonesweep run --address`` process, exactly as on a
cluster, with the storage password in its environment only. Everything runs in processes of
its own, under its own temp dir, so it never touches the test session's local Ray; every
process it started (found by a marker in their environment) is killed at the end, even on
failure (see ``tests/cluster_support.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from clonesweep.trials import node_host
from cluster_support import LocalCluster, marked_pids
from pgserver import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

PASSWORD_ENV = "CLONESWEEP_STORAGE_PASSWORD"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    if shutil.which("runuser") is None and os.geteuid() == 0:
        pytest.skip("no runuser")
    with LocalCluster() as c:
        c.start([["--num-cpus=1"], ["--num-cpus=1", "--num-gpus=1"]])
        yield c


class _Watch:
    """While the driver runs: does any process of the cluster hold the password?"""

    def __init__(self, marker: str, password: str, driver_pid: int) -> None:
        self.marker, self.secret, self.driver = marker, password.encode(), driver_pid
        self.seen: set[int] = set()
        self.holders: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in marked_pids(self.marker):
                if pid == self.driver:
                    continue
                with contextlib.suppress(OSError):
                    proc = Path(f"/proc/{pid}")
                    self.seen.add(pid)
                    for part in ("environ", "cmdline"):
                        if self.secret in (proc / part).read_bytes():
                            self.holders.append(f"{pid} {part}")
            self._stop.wait(0.5)


def _run_driver(cluster: LocalCluster, sweep: Path, url_without_password: str,
                password: str, *extra: str) -> tuple[dict[str, Any], str, _Watch]:
    env = {**cluster.env, PASSWORD_ENV: password, "RAY_ADDRESS": cluster.address}
    argv = [sys.executable, "-m", "clonesweep", "run", str(sweep), "--address",
            cluster.address, "--storage", url_without_password, "--json", *extra]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=sweep.parent)
    with _Watch(cluster.marker, password, proc.pid) as watch:
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError("the driver did not finish in 300 s:\n" + err[-3000:]
                                 + cluster.logs()) from None
    assert proc.returncode == 0, f"driver exit {proc.returncode}:\n{err[-4000:]}"
    return json.loads(out.strip().splitlines()[-1]), out + err, watch  # the summary line


def _node_id(node: str) -> str:
    """Ray's node id in a trial's ``node`` (``host/node-id``)."""
    return node.rsplit("/", 1)[-1]


def _user_only(url: str) -> str:
    u = make_url(url)
    return f"{u.drivername}://{u.username}@{u.host}:{u.port}/{u.database}"


def _study_rows(url: str, name: str) -> tuple[list[dict[str, Any]], str]:
    """Each trial's user attributes, and every attribute of the database as text."""
    import optuna
    import sqlalchemy

    study = optuna.load_study(study_name=name, storage=url)
    trials = [dict(t.user_attrs, state=t.state.name) for t in study.get_trials()]
    tables = ("study_user_attributes", "study_system_attributes", "trial_user_attributes",
              "trial_system_attributes")
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = [list(r) for t in tables for r in conn.execute(sqlalchemy.text(
                f"select * from {t}"))]
    finally:
        engine.dispose()
    return trials, json.dumps(rows, default=str)


def _files_holding(secret: str, *folders: Path) -> list[str]:
    needle = secret.encode()
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                    found.append(str(path.relative_to(folder)))
    return found


def test_sweep_spreads_over_nodes_with_the_study_in_postgres(
        cluster: LocalCluster, pg: PostgresServer, sweep_file: Any) -> None:
    name = f"multinode-{uuid.uuid4().hex[:8]}"
    path = sweep_file(name=name, trials=4, parallel=2, epochs=1, limit=200,
                      sweep_extra="\n  resources: {cpu: 1}")
    summary, output, watch = _run_driver(cluster, path, _user_only(pg.url), pg.password)
    assert summary["complete"] == 4 and summary["failed"] == 0, output[-3000:]

    trials, attributes = _study_rows(pg.url, name)
    assert len(trials) == 4 and {t["state"] for t in trials} == {"COMPLETE"}
    # node: host/ray-node-id; the host is this machine's, the ids tell the nodes apart.
    assert all(node_host(t["node"]) == socket.gethostname() for t in trials)
    nodes = {_node_id(t["node"]) for t in trials}
    alive = {n["id"]: n["resources"] for n in cluster.nodes()}
    assert len(nodes) == 2 and nodes <= set(alive), (nodes, alive)
    # Each CPU node ran trials; the head (no CPUs) ran none.
    assert all(alive[n].get("CPU", 0) == 1 for n in nodes)

    # The study lives in PostgreSQL, not in the run folder; the password leaked nowhere.
    run_folder = path.parent / "runs" / name
    assert (run_folder / "summary.json").is_file() and not (run_folder / "study.log").exists()
    assert summary["storage"].startswith("postgresql+psycopg2://sweeper:***@127.0.0.1:")
    assert watch.seen, "no cluster process was watched"
    assert not watch.holders, f"cluster processes hold the password: {watch.holders}"
    leaks = {"output": pg.password in output, "attributes": pg.password in attributes,
             "files": _files_holding(pg.password, run_folder, cluster.temp)}
    assert leaks == {"output": False, "attributes": False, "files": []}, "password leaked"


def test_fractional_gpus_pack_four_trials_on_the_gpu_node(
        cluster: LocalCluster, pg: PostgresServer, sweep_file: Any) -> None:
    """gpu: 0.25 per trial on a node with one (logical) GPU: four workers share it."""
    name = f"gpu-share-{uuid.uuid4().hex[:8]}"
    path = sweep_file(name=name, trials=4, parallel=8, epochs=1, limit=200,
                      sweep_extra="\n  resources: {cpu: 0.25, gpu: 0.25}")
    summary, output, _ = _run_driver(cluster, path, _user_only(pg.url), pg.password)
    assert summary["complete"] == 4, output[-3000:]
    trials, _ = _study_rows(pg.url, name)
    gpu_nodes = {n["id"] for n in cluster.nodes() if n["resources"].get("GPU", 0) >= 1}
    assert {_node_id(t["node"]) for t in trials} == gpu_nodes and len(gpu_nodes) == 1
    # parallel 8 was capped to the 4 slots one GPU holds (worker-0..3). How many of them ran
    # a trial is timing: a trial goes to the first slot whose worker is up, and these trials
    # are quick enough for one worker to run all four before the others have started.
    assert "fits 4 trials at once, not 8: running 4 in parallel" in output, output[-3000:]
    workers = {t["worker"] for t in trials}
    assert workers <= {f"worker-{i}" for i in range(4)}, workers
