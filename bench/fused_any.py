"""Fused ensembles of any model, end to end: ``clonesweep ensemble --fused`` against separate
members, for an MLP, a Conv+BatchNorm CNN and a small Transformer (configs/digits_*.json).

Each run is one ``python -m clonesweep ensemble`` command on its own embedded local Ray (2
workers, full digits, 5 epochs, batch 64), timed from the command's start to its end (Ray's
start and the workers' Keras import included: the same for every variant) and by the
ensemble's own ``wall_s`` (from Ray's start to the last member recorded). Variants:

- ``default``: separate members, the default path (``clonesweep ensemble``: TensorFlow
  workers, the traced graph engine where it covers the model, else Keras's fit);
- ``jax``: separate members on JAX workers (``KERAS_BACKEND=jax``) with JAX's persistent
  compilation cache on, as JAX workers have it by default (``--cache cold``: a fresh folder
  per run, so members after the first of an architecture skip their compilations;
  ``--cache warm``: a folder that an untimed run of the same variant filled);
- ``fused``: ``--fused``: the JAX engine (workers started with ``KERAS_BACKEND=jax``);
- ``fused-tf`` (MLP only): ``--fused`` on the Sequential MLP, which the TensorFlow stacked
  engine covers (the other MLP runs are the same layers as a Functional model, which goes to
  JAX).

The variants run interleaved (one of each per round, per model and member count), so a
machine whose load changes affects each alike. Prints one JSON line per run and a Markdown
table of medians and ratios (against the fastest separate variant).

    python bench/fused_any.py                                 # 8 and 32 members, 1 round
    python bench/fused_any.py --models mlp --members 8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mlp", "cnn", "transformer")

_SWEEP = """name: bench-{model}
model: {{config: {config}}}
data: {{loader: clonesweep.datasets:{loader}}}
training:
  epochs: {epochs}
  batch_size: 64
  optimizer: {{name: adam, learning_rate: 1.0e-3}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
objective: {{metric: val_accuracy, direction: maximize}}
parameters:
  layers.drop.rate: {{value: 0.2}}
sweep: {{trials: 1, parallel: 2, seed: 0}}
"""


def _functional_mlp(folder: Path) -> Path:
    """configs/digits_mlp.json's layers as a Functional model (the JAX engine's MLP)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    inputs = keras.Input((64,), name="pixels")
    h = keras.layers.Dense(64, activation="relu", name="hidden")(inputs)
    h = keras.layers.Dropout(0.2, name="drop")(h)
    out = keras.layers.Dense(10, activation="softmax", name="out")(h)
    path = folder / "digits_mlp_functional.json"
    path.write_text(json.dumps(keras.saving.serialize_keras_object(
        keras.Model(inputs, out, name="digits_mlp_functional"))))
    return path


def _sweep_file(folder: Path, model: str, config: Path, epochs: int) -> Path:
    loader = "digits" if model.startswith("mlp") else "digits_images"
    path = folder / f"{model}.yaml"
    path.write_text(_SWEEP.format(model=model, config=config, loader=loader, epochs=epochs))
    return path


def _run(folder: Path, sweep: Path, variant: str, members: int, tag: str,
         cache: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items()
           if k != "RAY_ADDRESS" and not k.startswith("JAX_COMPILATION")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow",
               CLONESWEEP_JAX_CACHE=cache)
    if variant == "jax":
        env.update(KERAS_BACKEND="jax")
    cmd = [sys.executable, "-m", "clonesweep", "ensemble", str(sweep), "--members",
           str(members), "--study", tag, "--json",
           *(["--fused"] if variant.startswith("fused") else [])]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True,
                          check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        print(f"{tag} failed:\n{done.stderr[-3000:]}", file=sys.stderr, flush=True)
        return {"variant": variant, "members": members, "seconds": float("nan"),
                "failed": True, "load": os.getloadavg()[0]}
    payload = json.loads(done.stdout)
    accuracy = [m["objective"] for m in payload["members"]]
    return {"variant": variant, "members": members, "seconds": round(seconds, 2),
            "wall_s": payload["wall_s"], "fused": payload["fused"],
            "note": payload["fused_note"],
            "mean_val_accuracy": round(statistics.mean(accuracy), 4),
            "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--members", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cache", choices=("cold", "warm"), default="cold",
                        help="JAX's compilation cache (on by default on JAX workers): cold, a "
                             "new folder for each run (a first sweep of the model); warm, one "
                             "folder per model and variant, filled by an untimed run first (a "
                             "rerun of the same structure)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fused-any-"))
    configs = {"mlp": _functional_mlp(folder), "cnn": ROOT / "configs/digits_cnn_bn.json",
               "transformer": ROOT / "configs/digits_transformer.json"}
    rows: list[dict[str, Any]] = []
    for model in args.models:
        sweep = _sweep_file(folder, model, configs[model], args.epochs)
        variants = ["default", "jax", "fused"] + (["fused-tf"] if model == "mlp" else [])
        seq = _sweep_file(folder, "mlp-seq", ROOT / "configs/digits_mlp.json", args.epochs)
        for k in args.members:
            kept = {v: str(folder / f"jax-{model}-{v}-{k}") for v in variants}
            if args.cache == "warm":
                for variant in variants:  # untimed: fills each variant's own cache
                    _run(folder, seq if variant == "fused-tf" else sweep, variant, k,
                         f"{model}-{variant}-{k}-fill", kept[variant])
            for r in range(args.rounds):
                for variant in variants:
                    tag = f"{model}-{variant}-{k}-{r}"
                    cache = kept[variant] if args.cache == "warm" else \
                        tempfile.mkdtemp(prefix="jaxcache-", dir=folder)
                    row = {"model": model, "cache": args.cache,
                           **_run(folder, seq if variant == "fused-tf" else sweep, variant,
                                  k, tag, cache)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    _table(rows)


def _table(rows: list[dict[str, Any]]) -> None:
    print("\n| model | members | default s | jax separate s | fused s | fused-tf s | "
          "fused vs fastest separate |")
    print("|---|---|---|---|---|---|---|")
    keys = sorted({(r["model"], r["members"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for model, k in keys:
        med = {v: statistics.median(r["seconds"] for r in rows if r["model"] == model and
                                    r["members"] == k and r["variant"] == v)
               for v in ("default", "jax", "fused", "fused-tf")
               if any(r["variant"] == v and r["model"] == model and r["members"] == k
                      for r in rows)}
        best = min(med.get("default", float("nan")), med.get("jax", float("nan")))
        cells = [f"{med[v]:.1f}" if v in med else "-" for v in
                 ("default", "jax", "fused", "fused-tf")]
        fused = med.get("fused", float("nan"))
        print(f"| {model} | {k} | {' | '.join(cells)} | {best / fused:.2f}x |")


if __name__ == "__main__":
    main()
