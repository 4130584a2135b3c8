"""A real multi-node Ray cluster on 127.0.0.1, made of ``ray start --block`` processes.

Every process of the cluster carries a marker in its environment and the cluster runs under
a temp dir of its own, so it never touches the test session's local Ray or another cluster
on the machine; :meth:`LocalCluster.stop` kills exactly the marked processes. ``ray stop`` is
never used: it would stop every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pgserver import PostgresServer, PostgresUnavailable, find_bindir
from tests_support import missing, pids_with_env

__all__ = ["MARKER", "NODE_ENV", "LocalCluster", "marked_pids", "own_postgres"]

MARKER = "CLONESWEEP_TEST_CLUSTER"
#: Set on each node's processes (and so on the workers its raylet starts): the node's name.
NODE_ENV = "CLONESWEEP_TEST_NODE"
_PASSWORD_ENV = "CLONESWEEP_STORAGE_PASSWORD"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def own_postgres() -> PostgresServer:
    """A PostgreSQL server of the caller's own (tests/pgserver.py), not started yet; without
    PostgreSQL's server binaries the test is skipped (failed under CI, see
    :func:`tests_support.missing`)."""
    bindir = find_bindir()
    try:
        if bindir is None:
            raise PostgresUnavailable("no PostgreSQL server binaries (initdb) found: tried "
                                      "`pg_config --bindir`, /usr/lib/postgresql/*/bin, PATH")
        return PostgresServer(bindir)
    except PostgresUnavailable as exc:
        missing(f"PostgreSQL is unusable: {exc}")


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment holds ``MARKER=marker``: the ones a cluster started."""
    return pids_with_env(MARKER, marker)


class LocalCluster:
    """Head + worker nodes as separate ``ray start --block`` processes on 127.0.0.1.

    Worker nodes are named ``worker0``, ``worker1``, ... in the order :meth:`start` (or
    :meth:`add`) starts them; :meth:`node_id` maps a name to Ray's node id and :meth:`kill`
    SIGKILLs a node's whole process group (its raylet, agents and workers), as a lost
    machine would vanish.
    """

    def __init__(self, python: str = sys.executable) -> None:
        """``python``: the interpreter every node runs (another environment's, e.g. one made
        from the image's install steps: then the nodes see only that environment, with its
        ``bin`` first on PATH and no PYTHONPATH of this session)."""
        self.python = python
        self.marker = uuid.uuid4().hex
        # Short: Ray's unix sockets live under it (108-byte path limit).
        self.temp = Path(tempfile.mkdtemp(prefix="csray-", dir="/tmp"))
        self.port, self.address = 0, ""  # the head's GCS port: chosen at each start of it
        # Ray 2.60's `ray start --head` turns token authentication on only if a token
        # already exists (~/.ray/auth_token); this cluster turns it on explicitly with a
        # token of its own, and every process of it (nodes, drivers, `ray job submit`)
        # needs RAY_AUTH_MODE=token and the token, as on a real cluster.
        token = self.temp / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in (_PASSWORD_ENV, "RAY_ADDRESS") and not k.startswith("RAY_AUTH")}
        self.env.update({MARKER: self.marker, "RAY_TMPDIR": str(self.temp),
                         "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                         "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "3"})
        if python != sys.executable:
            self.env.pop("PYTHONPATH", None)
            self.env["PATH"] = f"{Path(python).parent}{os.pathsep}{self.env.get('PATH', '')}"
        self.dashboard_url = ""  # http://127.0.0.1:PORT once started with dashboard=True
        #: Each node's dashboard agent HTTP port (its raylet health check), by node name.
        self.agent_ports: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._manager_ports: dict[str, int] = {}

    def _start(self, name: str, *args: str) -> None:
        ports = {flag: _free_port() for flag in (
            "--node-manager-port", "--object-manager-port", "--metrics-export-port",
            "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port", "--ray-client-server-port")}
        self._manager_ports[name] = ports["--node-manager-port"]
        self.agent_ports[name] = ports["--dashboard-agent-listen-port"]
        if name == "head":  # a fresh port on a retry too: the last one may have been taken
            self.port = _free_port()
            self.address = f"127.0.0.1:{self.port}"
            ports["--port"] = self.port
        argv = [self.python, "-m", "ray.scripts.scripts", "start", "--block",
                "--node-ip-address", "127.0.0.1", "--object-store-memory", str(100 << 20),
                "--min-worker-port", "0", "--max-worker-port", "0", "--disable-usage-stats",
                *[f"{flag}={port}" for flag, port in ports.items()], *args]
        log = (self.temp / f"{name}.log").open("wb")
        # A session of its own: the node's raylet, agents and workers share its process
        # group, which kill() takes down at once.
        self.procs[name] = subprocess.Popen(argv, env={**self.env, NODE_ENV: name}, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def _launch(self, name: str, *args: str, attempts: int = 3) -> None:
        """Start node ``name`` and wait until its ``ray start`` says it is up. On two busy
        cores a raylet can miss Ray's registration window and exit (it crashed once in a
        full CI run): start it again, up to ``attempts`` times in all."""
        for attempt in range(attempts):
            self._start(name, *args)
            log = self.temp / f"{name}.log"
            deadline = time.monotonic() + 150.0
            while time.monotonic() < deadline:
                if self.procs[name].poll() is not None:
                    break
                if log.exists() and b"Ray runtime started" in log.read_bytes():
                    return
                time.sleep(0.5)
            else:
                raise RuntimeError(f"ray node {name} did not start in 150 s:\n{self.logs()}")
            if attempt == attempts - 1:
                raise RuntimeError(f"ray node {name} exited at start {attempts} times:\n"
                                   + self.logs())
            log.rename(log.with_suffix(f".failed{attempt}.log"))
            del self.procs[name]

    def start(self, workers: list[list[str]], *, dashboard: bool = False) -> None:
        """Start the head (no CPUs) and one worker node per entry of ``workers``. With
        ``dashboard``, the head runs Ray's dashboard and job server on 127.0.0.1 (needs
        ``ray[default]``), at :attr:`dashboard_url`."""
        ui = ["--include-dashboard=false"]
        if dashboard:
            port = _free_port()
            self.dashboard_url = f"http://127.0.0.1:{port}"
            ui = ["--include-dashboard=true", "--dashboard-host=127.0.0.1",
                  f"--dashboard-port={port}"]
        self._launch("head", "--head", "--num-cpus=0", *ui, f"--temp-dir={self.temp}")
        self._wait_for(1)
        for extra in workers:
            self.add(extra)

    def add(self, extra: list[str]) -> str:
        """Start one more worker node (``ray start`` flags in ``extra``); returns its name."""
        # One node at a time: on two busy cores, raylets started together can miss Ray's
        # fixed 30 s registration window.
        name = f"worker{len(self.procs) - 1}"
        self._launch(name, f"--address={self.address}", *extra)
        self._wait_for(len(self.procs) - len(self.killed()))
        return name

    def nodes(self) -> list[dict[str, Any]]:
        """The live nodes (``ray.nodes()``), read by a short-lived separate driver: each
        with ``id``, ``resources`` and ``name`` (``head``, ``worker0``...)."""
        # The list goes out on one line marked NODES: Ray may print cluster events (a
        # raylet's lagging heartbeats on a loaded machine) on stdout after it.
        code = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                "print('NODES', json.dumps([{'id': n['NodeID'], 'alive': n['Alive'], "
                "'port': n['NodeManagerPort'], 'resources': n['Resources']} "
                "for n in ray.nodes()]))")
        done = subprocess.run([self.python, "-c", code, self.address], env=self.env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:] + self.logs())
        names = {port: name for name, port in self._manager_ports.items()}
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("NODES ")), None)
        if line is None:
            raise RuntimeError(f"no node list in: {done.stdout[-2000:]}" + self.logs())
        found = json.loads(line.removeprefix("NODES "))
        return [{**n, "name": names.get(n["port"], "?")} for n in found if n["alive"]]

    def node_id(self, name: str, nodes: list[dict[str, Any]] | None = None) -> str:
        """Ray's node id of the node called ``name``."""
        for node in nodes if nodes is not None else self.nodes():
            if node["name"] == name:
                return str(node["id"])
        raise KeyError(f"no live node called {name}")

    def kill(self, name: str) -> None:
        """SIGKILL node ``name``'s process group: its raylet, agents and worker processes."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def workers(self, busy: bool) -> list[tuple[int, str]]:
        """(pid, node name) of the cluster's clonesweep worker actors; busy ones run a trial."""
        want = b"ray::_WorkerActor.run" if busy else b"ray::_WorkerActor"
        found = []
        for pid in marked_pids(self.marker):
            with contextlib.suppress(OSError):
                if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(want):
                    continue
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                node = next((e.split(b"=", 1)[1].decode() for e in env
                             if e.startswith(NODE_ENV.encode() + b"=")), "?")
                found.append((pid, node))
        return found

    def killed(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def _wait_for(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None and p.returncode != -signal.SIGKILL
                   for p in self.procs.values()):
                raise RuntimeError("a ray node exited early:\n" + self.logs())
            with contextlib.suppress(RuntimeError, ValueError, subprocess.TimeoutExpired):
                if len(self.nodes()) >= count:
                    return
            time.sleep(2.0)  # each look starts a Python with Ray: not too often
        raise RuntimeError(f"{count} ray nodes did not come up in {timeout:g} s:\n{self.logs()}")

    def logs(self) -> str:
        out = []
        paths = [*self.temp.glob("*.log"), *self.temp.glob("session_*/logs/raylet*.err"),
                 *self.temp.glob("session_*/logs/raylet*.out")]
        for path in sorted(paths):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}")
        return "\n".join(out)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM every process of the cluster (found by its marker), SIGKILL what stays."""
        procs = list(self.procs.values())
        for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
            pids = set(marked_pids(self.marker))
            pids.update(p.pid for p in procs if p.poll() is None)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (
                    marked_pids(self.marker) or any(p.poll() is None for p in procs)):
                time.sleep(0.3)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        left = marked_pids(self.marker)
        shutil.rmtree(self.temp, ignore_errors=True)
        assert not left, f"processes left running: {left}"

