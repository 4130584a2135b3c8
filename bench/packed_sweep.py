"""Packed vs unpacked sweeps, end to end through ``clonesweep run``: one JSON line per run.

For each model (an MLP, a Conv2D + BatchNormalization CNN, a small Transformer block; the
test models of tests/scenarios/packed/packed_models.py) a sweep of ``--trials`` trials in which only
the learning rate, the plain Dropout's rate and the weight decay vary, run twice:

- ``unpacked``: the product's default path (TensorFlow workers, the traced-graph engine),
  ``--parallel`` workers (2 on a 2-core machine is the fastest separate path);
- ``packed``: ``training.pack: {enabled: true, max_trials: --pack}`` (JAX workers, one
  vmapped program per group), ``--packed-parallel`` workers.

Each run is a fresh ``python -m clonesweep run FILE`` (a fresh embedded Ray, a fresh study)
timed from the outside. The arms are interleaved (unpacked, packed, then packed, unpacked
on the next round) so that a machine loaded by others weighs on both alike; each line
carries the 1-minute load average before and after the run.

    python bench/packed_sweep.py --rounds 2 --epochs 3 [--models mlp cnn transformer]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "scenarios" / "packed"))

from packed_models import model_config, sweep_yaml  # type: ignore[import-not-found]  # noqa: E402

PARAMETERS = """
  optimizer.learning_rate: {min: 0.0005, max: 0.02, log: true}
  optimizer.weight_decay: {min: 0.0, max: 0.01}
  layers.drop.rate: {min: 0.0, max: 0.5}"""


def run(kind: str, arm: str, args: argparse.Namespace) -> dict[str, Any]:
    packed = arm == "packed"
    pack = (f"{{enabled: true, max_trials: {args.pack}, mode: {args.mode}}}" if packed
            else "{enabled: false}")
    parallel = args.packed_parallel if packed else args.parallel
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.json").write_text(json.dumps(model_config(kind)))
        text = sweep_yaml(kind, trials=args.trials, parameters=PARAMETERS, epochs=args.epochs,
                          pack=pack, limit=args.limit,
                          sampler="{name: tpe, seed: 0}").replace(
                              "parallel: 1", f"parallel: {parallel}")
        path = Path(tmp) / "s.yaml"
        path.write_text(text)
        # JAX's compilation cache (on by default on JAX workers): a new folder per run
        # (a first sweep of the model), or --warm-cache's folder, filled by earlier runs.
        cache = args.warm_cache or str(Path(tmp) / "jax-cache")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION")}
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "clonesweep", "run", str(path), "--json"],
                              cwd=tmp, capture_output=True, text=True, timeout=3000,
                              env={**env, "CLONESWEEP_JAX_CACHE": cache})
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        records = [json.loads(p.read_text()) for p in
                   (Path(tmp) / "runs" / f"packed_{kind}" / "trials").glob("*.json")]
    return {"model": kind, "arm": arm, "wall_s": round(wall, 2),
            "sweep_s": summary.get("wall_s"), "complete": summary["complete"],
            "parallel": parallel, "engines": sorted({str(r["engine"]) for r in records}),
            "groups": sorted({json.dumps(r["packed"]) for r in records}),
            "best": summary["best"]["value"] if summary.get("best") else None,
            "cache": "warm" if args.warm_cache else "cold",
            "load_before": round(load, 1), "load_after": round(os.getloadavg()[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn", "transformer"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=1797, help="digits samples used")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--packed-parallel", type=int, default=1)
    parser.add_argument("--pack", type=int, default=16, help="training.pack.max_trials")
    parser.add_argument("--mode", default="vmap")
    parser.add_argument("--warm-cache", default="",
                        help="a JAX compilation-cache folder kept across runs (default: a new "
                             "one per run)")
    parser.add_argument("--first", choices=("unpacked", "packed"), default="unpacked",
                        help="the arm round 0 runs first (later rounds alternate)")
    args = parser.parse_args()
    for r in range(args.rounds):
        for kind in args.models:
            arms = ("unpacked", "packed") if (r % 2 == 0) == (args.first == "unpacked") \
                else ("packed", "unpacked")
            walls = {}
            for arm in arms:
                line = run(kind, arm, args)
                walls[arm] = line["wall_s"]
                print(json.dumps({"round": r, **line}), flush=True)
            print(json.dumps({"round": r, "model": kind, "speedup": round(
                float(walls["unpacked"]) / float(walls["packed"]), 2)}), flush=True)


if __name__ == "__main__":
    main()
