"""clonesweep's side of the real-model reference sweeps (issue #23): one JSON line per run.

Writes a sweep file for the model (bench/anchors_models/models.py: the same config, data,
training and the same fixed trials as the floor, Ray Tune and Optuna scripts, every trial
enqueued in ``enqueue``) and runs ``python -m clonesweep run FILE --json`` in a fresh folder
(a fresh embedded local Ray, a fresh study), timed from the outside:

- ``wall_s``: from starting the command to its exit;
- ``first_epoch_s``: from starting the command to the first ``epoch`` event: the arrival of
  ``run_started`` plus that event's ``t`` (the driver's clock from ``run_started``);
  ``first_epoch_seen_s`` is when its line reached this script;
- ``fit_eval_sum_s``: the trials' ``train_s + eval_s`` from the run folder's
  ``trials/NNNNN.json`` (fit and the per-epoch validation; the time spent reporting to the
  driver is not in it), ``build_sum_s`` their ``build_s``;
- ``overhead_s``: ``wall_s - fit_eval_sum_s / 2``.

``--keras-backend jax`` sets ``KERAS_BACKEND=jax`` in the driver's environment, so the Ray
workers run Keras on JAX, with ``training.jit_compile: true`` (clonesweep's default is false,
which on JAX trains un-jitted; Keras's own ``"auto"`` jits on JAX and does not jit
TensorFlow on a CPU, which is what the other tools get). JAX workers keep a persistent
compilation cache: each run gets a fresh folder (a first sweep, ``jax_cache: cold``) unless
``--jax-cache DIR`` names one kept across runs (``warm`` once an earlier run filled it), or
``off``. ``--pack N`` packs up to N trials per group (``training.pack``: the workers run
JAX whatever the driver's backend, each group one vmapped program; a fresh cache folder as
above): the tool ``clonesweep-packed``.

    python bench/clonesweep_models.py --model cnn [--keras-backend jax] [--trials 2 --epochs 1]
    python bench/clonesweep_models.py --model cnn --pack 8
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "anchors_models"))

import models  # type: ignore[import-not-found]  # noqa: E402
from timing import timed  # type: ignore[import-not-found]  # noqa: E402


def sweep_file(model: str, trials: list[dict[str, float]], epochs: int,
               jit_compile: bool, pack: int = 0) -> dict[str, Any]:
    """The sweep, as the mapping its YAML file holds (JSON is YAML); ``pack`` > 0 packs up
    to that many trials per group (``training.pack``: JAX workers, one vmapped program)."""
    sweep = {
        "name": f"anchors-{model}",
        "model": {"config": str(models.CONFIGS[model])},
        "data": {"loader": "clonesweep.datasets:digits_images"},
        "training": {"epochs": epochs, "batch_size": models.BATCH,
                     "optimizer": {"name": "adam", "learning_rate": 0.001},
                     "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"],
                     "validation_batch_size": models.VALIDATION_BATCH,
                     "jit_compile": jit_compile},
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "parameters": {models.SWEEP_KEYS[name]: {"min": low, "max": high, "log": log}
                       for name, (low, high, log) in models.SPACE.items()},
        "enqueue": [{models.SWEEP_KEYS[k]: v for k, v in p.items()} for p in trials],
        "sweep": {"trials": len(trials), "parallel": models.PARALLEL,
                  "sampler": {"name": "random", "seed": 0}, "pruner": "none", "seed": 0},
    }
    # Without --pack, the unpacked path, named: these sweeps (only learning rate, Dropout
    # rate and weight decay vary, 16 trials) are ones that `pack: auto` (the product's
    # default since 2026-12-06) packs.
    sweep["training"]["pack"] = {"enabled": True, "max_trials": pack, "mode": "vmap"} \
        if pack else {"enabled": False}
    return sweep


def environment(backend: str, cache: str) -> dict[str, str]:
    """The driver's environment: the Keras backend its workers run, JAX's cache folder."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION", "JAX_PERSISTENT_CACHE"))}
    env.update(KERAS_BACKEND=backend, CLONESWEEP_JAX_CACHE=cache, TF_CPP_MIN_LOG_LEVEL="3")
    return env


def run(args: Any, folder: Path) -> dict[str, Any]:
    """Run the sweep once in ``folder``; what it measured."""
    trials = models.fixed_trials(args.trials)
    jit = args.keras_backend == "jax" if args.jit_compile == "auto" else \
        args.jit_compile == "true"
    path = folder / "sweep.yaml"
    path.write_text(json.dumps(sweep_file(args.model, trials, args.epochs, jit, args.pack),
                               indent=1))
    tool = "clonesweep-packed" if args.pack else f"clonesweep-{args.keras_backend}"
    cache = args.jax_cache or str(folder / "jax-cache")
    cache_state = "off" if cache == "off" else \
        "warm" if Path(cache).is_dir() and any(Path(cache).iterdir()) else "cold"
    events: dict[str, Any] = {}

    def on_line(at: float, text: str) -> None:
        event = json.loads(text)
        kind = event["event"]
        if kind == "run_started" or (kind == "epoch" and "epoch" not in events):
            events[kind] = (at, event)
        elif kind == "summary":
            events[kind] = event

    load = os.getloadavg()[0]
    done = timed([sys.executable, "-m", "clonesweep", "run", str(path), "--json"],
                 env=environment(args.keras_backend, cache), cwd=folder,
                 stderr=folder / "stderr.txt", on_line=on_line)
    rc, wall = done.rc, done.wall_s
    if rc != 0 or "summary" not in events:
        tail = (folder / "stderr.txt").read_text()[-3000:]
        return {"tool": tool, "model": args.model, "rc": rc,
                "wall_s": round(wall, 3), "stderr_tail": tail}
    records = [json.loads(p.read_text()) for p in
               sorted((folder / "runs" / f"anchors-{args.model}" / "trials").glob("*.json"))]
    check_params(records, trials)
    fit_eval = sum(r["train_s"] + r["eval_s"] for r in records)
    summary = events["summary"]
    started_at, _ = events["run_started"]
    seen_at, epoch = events.get("epoch", (None, None))
    best = summary["best"]
    return {
        "tool": tool, "model": args.model, "rc": rc, "pack": args.pack,
        "trials": len(records), "epochs": args.epochs, "parallel": models.PARALLEL,
        "keras_backend": args.keras_backend, "jit_compile": jit,
        "jax_cache": cache_state if args.keras_backend == "jax" or args.pack else None,
        "wall_s": round(wall, 3), "fit_eval_sum_s": round(fit_eval, 3),
        "build_sum_s": round(sum(r["build_s"] for r in records), 3),
        "overhead_s": round(wall - fit_eval / models.PARALLEL, 3),
        "first_epoch_s": None if epoch is None else round(started_at + epoch["t"], 3),
        "first_epoch_seen_s": None if seen_at is None else round(seen_at, 3),
        "run_started_s": round(started_at, 3),
        "best_val_accuracy": None if best is None else round(best["value"], 4),
        "complete": summary["complete"], "failed": summary["failed"],
        "sweep_wall_s": summary["wall_s"], "trial_seconds": summary["trial_seconds"],
        "engines": sorted({str(r["engine"]) for r in records}),
        "load_before": round(load, 2), "load_1m": round(os.getloadavg()[0], 2),
    }


def check_params(records: list[dict[str, Any]], trials: list[dict[str, float]]) -> None:
    """Every trial trained one of the fixed sets, each set once: the same trials as the
    other tools."""
    wanted = sorted(tuple(sorted((models.SWEEP_KEYS[k], v) for k, v in p.items()))
                    for p in trials)
    got = sorted(tuple(sorted(r["params"].items())) for r in records)
    if got != wanted:
        raise SystemExit(f"the sweep did not run the fixed trials: {got} != {wanted}")


def main() -> None:
    parser = models.arguments(__doc__.splitlines()[0])
    parser.add_argument("--keras-backend", choices=("tensorflow", "jax"), default="tensorflow")
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                        help="training.jit_compile; auto: true on JAX, false on TensorFlow")
    parser.add_argument("--jax-cache", default="",
                        help="JAX workers' compilation-cache folder kept across runs (warm), "
                             "or 'off'; default: a fresh folder per run (cold)")
    parser.add_argument("--pack", type=int, default=0,
                        help="training.pack with this max_trials (JAX workers; the driver's "
                             "backend stays as --keras-backend says); 0: off")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        line = run(args, Path(tmp))
    print(json.dumps(line), flush=True)
    if line["rc"] != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
