"""Time to accuracy with pruning: clonesweep (Optuna Hyperband) vs Ray Tune (ASHA), #23 bench 2.

Both tools sweep the Conv+BatchNorm CNN of configs/digits_cnn_bn.json on the digits images
(``clonesweep.datasets:digits_images``) over one search space (``SPACE``: learning rate,
the Dropout's rate, the Conv2D's filters), TPE seed 0, ``--parallel`` trials at a time, each
trial at most ``--epochs`` epochs, with early stopping across the sweep:

- ``clonesweep``: ``python -m clonesweep run FILE --json`` on a sweep file written here with
  ``sweep.pruner: {name: hyperband, min_resource, reduction_factor}`` (``--pruner
  successive_halving``: Optuna's asynchronous successive halving, ASHA's own algorithm). Its
  curve comes from the ``epoch`` events' ``t`` (the driver's clock), moved onto this script's
  clock by the smallest gap between a line's arrival and its ``t``;
- ``raytune``: bench/pruning_raytune.py in a subprocess (function trainable, ASHAScheduler with
  the same rungs, OptunaSearch, ``max_concurrent_trials``, ``reuse_actors=True``); its curve
  comes from each report's wall time on the worker.

Both clocks start when this script launches the tool's command, so interpreter start, imports
and Ray's start count. The curve is the best ``val_accuracy`` any trial reported at any epoch
so far (the same definition for both tools); a tool's final best is its curve's last value.
The race asks when clonesweep's curve first reaches Ray Tune's final best, as a fraction of
Ray Tune's wall (target <= 0.6). Rounds alternate which tool runs first.

Writes one JSON line per tool run and one per round with both tools (``race``) to
``--results``, a PNG of every curve to ``--plot`` (matplotlib: ``pip install
"clonesweep[bench]"``), and a summary on stdout.

    python bench/pruning_race.py --tool both --trials 64 --epochs 9 --rounds 2
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pruning_plot import plot

HERE = Path(__file__).resolve().parent
MODEL = HERE.parent / "configs" / "digits_cnn_bn.json"
#: The search space, W&B-shaped as clonesweep's sweep file takes it; the Ray side reads the
#: same entries (ints -> suggest_int, else suggest_float; ``log`` as given).
SPACE: dict[str, dict[str, Any]] = {
    "optimizer.learning_rate": {"min": 1.0e-4, "max": 1.0e-1, "log": True},
    "layers.drop.rate": {"min": 0.0, "max": 0.5},
    "layers.conv.filters": {"min": 8, "max": 64, "log": True},
}
TARGET = 0.6
TOOLS = ("clonesweep", "raytune")

Curve = list[tuple[float, float]]


@dataclass
class Run:
    """One tool's sweep: every report as (seconds since launch, val_accuracy), and its wall."""

    tool: str
    wall_s: float
    points: Curve
    counts: dict[str, Any] = field(default_factory=dict)


def best_so_far(points: Curve) -> Curve:
    """The steps of the best-so-far curve: each report that raised the best, in time order.

    Example:
        >>> best_so_far([(2.0, 0.5), (1.0, 0.4), (3.0, 0.45), (4.0, 0.9)])
        [(1.0, 0.4), (2.0, 0.5), (4.0, 0.9)]
    """
    curve: Curve = []
    for t, value in sorted(points):
        if not curve or value > curve[-1][1]:
            curve.append((t, value))
    return curve


def first_reach(curve: Curve, level: float) -> float | None:
    """When the curve first reaches ``level`` (None: never).

    Example:
        >>> first_reach([(1.0, 0.4), (2.0, 0.5), (4.0, 0.9)], 0.5)
        2.0
        >>> first_reach([(1.0, 0.4)], 0.5) is None
        True
    """
    return next((t for t, value in curve if value >= level - 1e-9), None)


def _histogram(epochs: Iterable[int]) -> dict[str, int]:
    """How many early-stopped trials stopped after how many epochs, as JSON keys.

    Example:
        >>> _histogram([2, 4, 2])
        {'2': 2, '4': 1}
    """
    counts = Counter(epochs)
    return {str(k): counts[k] for k in sorted(counts)}


def sweep_file(folder: Path, args: argparse.Namespace) -> Path:
    pruner: dict[str, Any] = {"name": args.pruner, "min_resource": args.min_resource,
                              "reduction_factor": args.reduction_factor}
    text = yaml.safe_dump({
        "name": "pruning-race",
        "model": {"config": str(MODEL)},
        "data": {"loader": "clonesweep.datasets:digits_images"},
        "training": {"epochs": args.epochs, "batch_size": args.batch_size,
                     "optimizer": {"name": "adam", "learning_rate": 1.0e-3},
                     "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "parameters": SPACE,
        "sweep": {"trials": args.trials, "parallel": args.parallel,
                  "sampler": {"name": "tpe", "seed": 0}, "pruner": pruner, "seed": 0,
                  "run_dir": str(folder / "runs")},
    }, sort_keys=False)
    path = folder / "sweep.yaml"
    path.write_text(text)
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _failed(tool: str, rc: int, log: Path) -> SystemExit:
    tail = log.read_text(errors="replace")[-3000:]
    return SystemExit(f"{tool} exited {rc}; the end of its stderr:\n{tail}")


def run_clonesweep(args: argparse.Namespace) -> Run:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path, log = sweep_file(folder, args), folder / "stderr.log"
        events: list[tuple[float, dict[str, Any]]] = []
        with log.open("w") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "clonesweep", "run", str(path),
                                     "--json"], cwd=tmp, stdout=subprocess.PIPE, stderr=err,
                                    text=True, env=_env())
            assert proc.stdout is not None
            for line in proc.stdout:
                events.append((time.perf_counter() - t0, json.loads(line)))
            rc = proc.wait()
            wall = time.perf_counter() - t0
        if rc != 0:
            raise _failed("clonesweep run", rc, log)
    # Each line arrives after its event: the smallest gap is the driver clock's offset.
    offset = min(arrival - event["t"] for arrival, event in events)
    points = [(round(event["t"] + offset, 3), float(event["value"])) for _, event in events
              if event["event"] == "epoch" and event["value"] is not None]
    finished = [e for _, e in events if e["event"] == "trial_finished"]
    stopped_after = _histogram(e["epochs_done"] for e in finished if e["state"] == "pruned")
    summary = next(e for _, e in events if e["event"] == "summary")
    counts = {"complete": summary["complete"], "pruned": summary["pruned"],
              "failed": summary["failed"], "epochs_trained": len(points),
              "answer_best": None if summary["best"] is None else summary["best"]["value"],
              "driver_offset_s": round(offset, 3), "trials_done": len(finished),
              "stopped_after": stopped_after}
    return Run("clonesweep", round(wall, 2), points, counts)


def run_raytune(args: argparse.Namespace) -> Run:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "stderr.log"
        with log.open("w") as err:
            t0, wall0 = time.perf_counter(), time.time()
            done = subprocess.run([
                sys.executable, str(HERE / "pruning_raytune.py"), "--model", str(MODEL),
                "--space", json.dumps(SPACE), "--trials", str(args.trials),
                "--epochs", str(args.epochs), "--min-resource", str(args.min_resource),
                "--reduction-factor", str(args.reduction_factor),
                "--parallel", str(args.parallel), "--batch-size", str(args.batch_size),
                "--tf-threads", str(args.ray_tf_threads), "--t0", repr(wall0)],
                cwd=tmp, stdout=subprocess.PIPE, stderr=err, text=True, env=_env())
            wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise _failed("bench/pruning_raytune.py", done.returncode, log)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    reports = out["reports"]
    last_step: dict[int, int] = {}
    for _, trial, step, _ in reports:
        last_step[trial] = max(step, last_step.get(trial, -1))
    stopped = sum(step < args.epochs - 1 for step in last_step.values())
    stopped_after = _histogram(step + 1 for step in last_step.values() if step < args.epochs - 1)
    counts = {"complete": len(last_step) - stopped, "stopped": stopped,
              "errors": out["errors"], "epochs_trained": len(reports),
              "answer_best": out["answer_best"], "tf_threads": out["tf_threads"],
              "trials_done": out["trials"], "stopped_after": stopped_after}
    return Run("raytune", round(wall, 2), [(t, v) for t, _, _, v in reports], counts)


def record(run: Run, round_: int, args: argparse.Namespace, load: float) -> dict[str, Any]:
    curve = best_so_far(run.points)
    final = curve[-1][1] if curve else None
    return {
        "bench": "pruning_race", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), "round": round_, "tool": run.tool,
        "scheduler": args.pruner if run.tool == "clonesweep" else "asha",
        "trials": args.trials, "epochs": args.epochs, "parallel": args.parallel,
        "min_resource": args.min_resource, "reduction_factor": args.reduction_factor,
        "wall_s": run.wall_s, "final_best": final,
        "reached_final_s": None if final is None else first_reach(curve, final),
        **run.counts, "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2), "curve": curve,
    }


def race(lines: dict[str, dict[str, Any]], round_: int) -> dict[str, Any]:
    """When clonesweep first reached Ray Tune's final best, as a fraction of Ray Tune's wall."""
    ray, cs = lines["raytune"], lines["clonesweep"]
    reach = None if ray["final_best"] is None else first_reach(
        [tuple(p) for p in cs["curve"]], ray["final_best"])
    ratio = None if reach is None else round(reach / ray["wall_s"], 3)
    return {"bench": "pruning_race", "round": round_, "race": True,
            "raytune_best": ray["final_best"], "raytune_wall_s": ray["wall_s"],
            "clonesweep_best": cs["final_best"], "clonesweep_wall_s": cs["wall_s"],
            "clonesweep_reach_s": reach, "ratio": ratio, "target": TARGET,
            "met": ratio is not None and ratio <= TARGET}


def describe(line: dict[str, Any]) -> str:
    if line.get("race"):
        reach = ("never reached it" if line["ratio"] is None else
                 f"reached it at {line['clonesweep_reach_s']} s = {line['ratio']}x Ray Tune's "
                 f"wall")
        return (f"round {line['round']}: clonesweep {reach} (target <= {TARGET}x: "
                f"{'met' if line['met'] else 'missed'})")
    best = "none" if line["final_best"] is None else f"{line['final_best']:.4f}"
    return (f"round {line['round']}: {line['tool']:<10} final best {best} "
            f"(first at {line['reached_final_s']} s), wall {line['wall_s']} s, "
            f"{line['epochs_trained']} epochs trained, load {line['load_before']}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", choices=(*TOOLS, "both"), default="both")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=9, help="each trial's most epochs")
    parser.add_argument("--rounds", type=int, default=1, help="rounds alternate the order")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pruner", choices=("hyperband", "successive_halving"),
                        default="hyperband", help="clonesweep's Optuna pruner")
    parser.add_argument("--min-resource", type=int, default=1,
                        help="the first rung, in 0-based epochs (Optuna's min_resource, "
                             "ASHA's grace_period on the same counter)")
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--ray-tf-threads", type=int, default=0,
                        help="TensorFlow threads in Ray Tune's trials (0: TF's default)")
    parser.add_argument("--results", type=Path, default=HERE / "results.jsonl")
    parser.add_argument("--plot", type=Path, default=HERE / "pruning_race.png")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.min_resource < args.epochs:
        parser.error(f"--min-resource must be >= 1 and < --epochs (a rung after the last "
                     f"epoch prunes nothing), got {args.min_resource} with --epochs "
                     f"{args.epochs}")
    if args.reduction_factor < 2 or args.trials < 1 or args.rounds < 1:
        parser.error("--reduction-factor must be >= 2, --trials and --rounds >= 1")
    if not args.no_plot and importlib.util.find_spec("matplotlib") is None:
        parser.error('the plot needs matplotlib: pip install "clonesweep[bench]" '
                     "(or --no-plot)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    tools = TOOLS if args.tool == "both" else (args.tool,)
    runners = {"clonesweep": run_clonesweep, "raytune": run_raytune}
    lines: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        this: dict[str, dict[str, Any]] = {}
        for tool in tools if round_ % 2 == 0 else tools[::-1]:
            load = os.getloadavg()[0]
            this[tool] = record(runners[tool](args), round_, args, load)
            lines.append(this[tool])
            print(json.dumps(this[tool]), flush=True)
        if len(this) == 2:
            lines.append(race(this, round_))
            print(json.dumps(lines[-1]), flush=True)
    with args.results.open("a") as out:
        out.writelines(json.dumps(line) + "\n" for line in lines)
    if not args.no_plot:
        plot(lines, args.plot)
    print("\nsummary (seconds since each tool's command started):")
    for line in lines:
        print("  " + describe(line))
    print(f"results appended to {args.results}" +
          ("" if args.no_plot else f"; plot written to {args.plot}"))


if __name__ == "__main__":
    main()
