"""Where the time to the first epoch goes (issue #23): `clonesweep run` split into the
driver's phases, and the CPU every process of the sweep spent until the first epoch ended.

Runs one real-model reference sweep (bench/anchors_models/models.py: the CNN+BN or the
Transformer, the 16 fixed trials; ``--trials``/``--epochs`` shrink it) as
``python -m clonesweep run FILE --json`` with a thin wrapper around the driver that stamps,
on stderr, the wall clock (from the command's start) and the driver's CPU clock at the
start and end of each step on the way to the first trial: the CLI's imports, the lease
read, Keras's import, the checks (`validate_sweep`: the rebuild at the corners, the data
check), `RayBackend.start` (`ray.init` with the workers' preload; the actors are created
asynchronously), opening the study, the loop. When the first `epoch` line arrives, it reads
the CPU seconds (user + system) of every process under the driver (`psutil`) and sums them
by role: the driver, Ray's own processes (GCS, raylet, agents, log monitor), the Ray worker
processes (the trial actors and the pruning broker).

With ``--floor`` it also times the floor's first epoch the same way: one process that
imports Keras, loads the data, builds the first trial's model and fits one epoch (what a
single warm-process tool pays before its first epoch), wall and CPU.

CPU seconds are the figure that survives a loaded machine (the wall clock does not): the
sum over processes is the work that must be done before the first epoch on this many
cores, whatever runs beside it.

    python bench/startup_profile.py --model cnn [--floor] [--repeats 2]
    python bench/startup_profile.py --model cnn --trials 2 --epochs 1     # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "anchors_models"))
sys.path.insert(0, str(HERE))

# The driver-side wrapper: patches the steps of `run` to stamp their start and end, then
# runs clonesweep's CLI. Bench code only: the product is not changed by it.
_WRAPPER = r"""
import functools, json, os, sys, time
T0 = float(os.environ["BENCH_T0"])
def stamp(what):
    print("[phase] " + json.dumps({"what": what, "wall": round(time.time() - T0, 3),
                                   "cpu": round(time.process_time(), 3)}),
          file=sys.stderr, flush=True)
stamp("interpreter up")
import clonesweep.cli.main
cli = sys.modules["clonesweep.cli.main"]
stamp("CLI imported")
def wrap(owner, name, label):
    f = getattr(owner, name)
    @functools.wraps(f)
    def g(*a, **k):
        stamp("> " + label)
        try:
            return f(*a, **k)
        finally:
            stamp("< " + label)
    setattr(owner, name, g)
import clonesweep.orchestrator.commands.validate as v
import clonesweep.orchestrator.backends.ray.backend as rb
import clonesweep.orchestrator.backends.ray.startup as su
import clonesweep.orchestrator.loop as lp
import clonesweep.orchestrator.study.setup as setup
stamp("patched")
wrap(cli, "_import_keras_first", "Keras import")
wrap(v, "validate_sweep", "checks")
wrap(v, "build_corners", "rebuild at the corners")
wrap(v, "check_data", "data check")
wrap(rb.RayBackend, "start", "backend start")
wrap(su, "_init", "ray.init")
wrap(setup.StudyPlan, "open", "open the study")
wrap(lp.Loop, "run", "loop")
sys.argv = ["clonesweep"] + sys.argv[1:]
sys.exit(cli.main())
"""

_FLOOR = r"""
import json, os, sys, time
T0 = float(os.environ["BENCH_T0"])
sys.path.insert(0, os.environ["BENCH_MODELS"])
import models
def stamp(what):
    print("[phase] " + json.dumps({"what": what, "wall": round(time.time() - T0, 3),
                                   "cpu": round(time.process_time(), 3)}),
          file=sys.stderr, flush=True)
stamp("interpreter up")
import keras
stamp("Keras imported")
x, y, xv, yv = models.load_data()
params = models.fixed_trials(1)[0]
net = models.build(sys.argv[1], params, 0)
stamp("model built")
net.fit(x, y, epochs=1, batch_size=models.BATCH, validation_data=(xv, yv),
        validation_batch_size=models.VALIDATION_BATCH, verbose=0)
stamp("first epoch")
"""


def _role(proc: Any) -> str:
    """A process's part in the sweep, from its command line (Ray renames its worker
    processes ``ray::<actor>``; the pruning broker is one of them)."""
    try:
        cmd = " ".join(proc.cmdline())
    except Exception:
        return "gone"
    if cmd.startswith("ray::") or "default_worker.py" in cmd:
        return "ray workers"
    for name in ("gcs_server", "raylet", "dashboard_agent", "runtime_env", "log_monitor",
                 "monitor.py"):
        if name in cmd:
            return name.replace(".py", "")
    return "other: " + os.path.basename(cmd.split(" ")[0])


def _cpu(proc: Any) -> float:
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except Exception:
        return 0.0


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid`` and every process under it, summed by role."""
    import psutil

    root = psutil.Process(pid)
    out = {"driver": _cpu(root)}
    for child in root.children(recursive=True):
        role = _role(child)
        out[role] = out.get(role, 0.0) + _cpu(child)
    return {k: round(v, 2) for k, v in out.items()}


def run_once(model: str, trials: int, epochs: int, folder: Path) -> dict[str, Any]:
    import clonesweep_models
    import models

    sweep = clonesweep_models.sweep_file(model, models.fixed_trials(trials), epochs, False)
    path = folder / "sweep.yaml"
    path.write_text(json.dumps(sweep, indent=1))
    env = clonesweep_models.environment("tensorflow", "off")
    env["BENCH_T0"] = f"{time.time():.6f}"
    start = float(env["BENCH_T0"])
    proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, "run", str(path), "--json"],
                            cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    phases: list[dict[str, Any]] = []
    err_tail: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for text in proc.stderr:
            if text.startswith("[phase] "):
                phases.append(json.loads(text[8:]))
            else:
                err_tail[:] = [*err_tail, text][-40:]

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    first: dict[str, Any] = {}
    assert proc.stdout is not None
    for text in proc.stdout:
        event = json.loads(text)
        if event["event"] == "epoch" and not first:
            first = {"first_epoch_seen_s": round(time.time() - start, 3),
                     "cpu_at_first_epoch": tree_cpu(proc.pid)}
    rc = proc.wait()
    reader.join()
    return {"model": model, "trials": trials, "epochs": epochs, "rc": rc,
            "wall_s": round(time.time() - start, 3), "phases": phases, **first,
            "load_1m": round(os.getloadavg()[0], 2),
            **({} if rc == 0 else {"stderr_tail": "".join(err_tail)})}


def floor_once(model: str) -> dict[str, Any]:
    env = dict(os.environ, BENCH_T0=f"{time.time():.6f}", BENCH_MODELS=str(HERE /
               "anchors_models"), TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    done = subprocess.run([sys.executable, "-c", _FLOOR, model], env=env, text=True,
                          capture_output=True)
    phases = [json.loads(t[8:]) for t in done.stderr.splitlines() if t.startswith("[phase] ")]
    return {"model": model, "case": "floor", "rc": done.returncode, "phases": phases,
            "load_1m": round(os.getloadavg()[0], 2)}


def show(line: dict[str, Any]) -> None:
    print(f"\n{line.get('case', 'clonesweep run')} ({line['model']}), rc {line['rc']}, "
          f"load {line['load_1m']}:")
    opened: dict[str, dict[str, Any]] = {}
    for p in line["phases"]:
        what = p["what"]
        if what.startswith("> "):
            opened[what[2:]] = p
            continue
        if what.startswith("< ") and what[2:] in opened:
            a = opened.pop(what[2:])
            print(f"  {what[2:]:<24} {a['wall']:7.2f} -> {p['wall']:7.2f} s  "
                  f"({p['wall'] - a['wall']:6.2f} s wall, {p['cpu'] - a['cpu']:6.2f} s "
                  f"driver CPU)")
        else:
            print(f"  {what:<24} at {p['wall']:7.2f} s (driver CPU {p['cpu']:.2f} s)")
    if "first_epoch_seen_s" in line:
        cpu = line["cpu_at_first_epoch"]
        print(f"  first epoch seen at {line['first_epoch_seen_s']:.2f} s; CPU seconds spent "
              f"by then: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()) +
              f"; total {sum(cpu.values()):.2f}")
    if "wall_s" in line:
        print(f"  exit at {line['wall_s']:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn", choices=("cnn", "transformer"))
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--floor", action="store_true", help="time the floor's first epoch")
    parser.add_argument("--results", default=str(HERE / "results.jsonl"))
    args = parser.parse_args()
    for _ in range(args.repeats):
        lines = []
        with tempfile.TemporaryDirectory() as tmp:
            lines.append(run_once(args.model, args.trials, args.epochs, Path(tmp)))
        if args.floor:
            lines.append(floor_once(args.model))
        for line in lines:
            line = {"label": "startup", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime()), **line}
            with open(args.results, "a") as out:
                out.write(json.dumps(line) + "\n")
            show(line)


if __name__ == "__main__":
    main()
