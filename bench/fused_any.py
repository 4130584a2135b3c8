"""Fused members on JAX (clonesweep.workers.engines.jaxfused) against the same members fitted
one after another with the Keras-fit engine on JAX: MLP, Conv+BatchNorm CNN and a small
Transformer, at 8 and 32 members, digits, each case in a fresh Python process (so each
starts cold, as on a new worker, and pays its XLA compilations).

    python bench/fused_any.py                       # 8 and 32 members, 5 epochs, all digits
    python bench/fused_any.py --members 2 --epochs 1 --limit 200   # a smoke run
    python bench/fused_any.py --cache /tmp/jaxcache  # separate fits use JAX's compilation cache

Prints one JSON line per case and a Markdown table. ``separate`` runs only at the smallest
member count (its time grows linearly: the table scales it). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial
from typing import Any

# Light: the module imports Keras only when it builds a model (after the backend is chosen).
from clonesweep.examples.shapes import INPUT_SHAPES, KINDS, digits_shape


def _model_config(kind: str) -> dict[str, Any]:
    import keras

    model = digits_shape(kind, hidden=128, filters=16, embed=32, heads=4)
    config: dict[str, Any] = keras.saving.serialize_keras_object(model)
    return config


def _case(kind: str, how: str, members: int, epochs: int, limit: int | None,
          mode: str) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    from clonesweep.datasets import digits
    from clonesweep.workers.engines.base import TrainData
    from clonesweep.workers.engines.jaxfused import FusedMember, FusedPlan, Mode, train_fused_jax
    from clonesweep.workers.engines.jaxstate import member_optimizer
    from clonesweep.workers.engines.kerasfit import FitClock, FitPlan, fit_trial
    from clonesweep.workers.rebuild import rebuild
    from clonesweep.workers.seeding import DATA_ORDER

    x_tr, y_tr, x_va, y_va = digits(limit=limit)
    shape = INPUT_SHAPES[kind]
    data = (x_tr.reshape(-1, *shape), y_tr, x_va.reshape(-1, *shape), y_va)
    plan = FusedPlan(epochs=epochs, batch_size=64, validation_batch_size=256,
                     loss="sparse_categorical_crossentropy", metrics=("accuracy",),
                     mode=Mode(mode))
    group = [FusedMember(seed) for seed in range(members)]
    config = _model_config(kind)
    t0 = time.perf_counter()
    if how == "fused":
        result = train_fused_jax(config, group, data, plan)
        accuracy = [h["val_accuracy"][-1] for h in result.histories]
    else:
        accuracy = []
        for member in group:
            variant = rebuild(config, {}, seed=member.seed)
            variant.model.compile(optimizer=member_optimizer(plan, member), loss=plan.loss,
                                  metrics=list(plan.metrics))
            logs: dict[str, float] = {}
            fit_trial(variant.model, TrainData.of(data), FitPlan(epochs, 64, 256,
                                                   variant.materialized.seeds[DATA_ORDER]),
                      partial(_record, logs), FitClock())
            accuracy.append(logs["val_accuracy"])
    return {"model": kind, "how": how, "members": members, "mode": mode,
            "seconds": round(time.perf_counter() - t0, 2),
            "mean_val_accuracy": round(sum(accuracy) / len(accuracy), 4)}


def _record(logs: dict[str, float], _epoch: int, got: dict[str, float]) -> bool:
    logs.update(got)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--members", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="use the first N digits")
    parser.add_argument("--mode", default="vmap", choices=("vmap", "map", "serial"))
    parser.add_argument("--cache", default=None, help="JAX compilation cache folder")
    parser.add_argument("--case", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:  # a child process: one measurement
        print(json.dumps(_case(args.case[0], args.case[1], args.members[0], args.epochs,
                               args.limit, args.mode)))
        return
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    if args.cache:
        env.update(JAX_COMPILATION_CACHE_DIR=args.cache,
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    rows = []
    for kind in args.models:
        for how, counts in (("separate", [min(args.members)]), ("fused", args.members)):
            for k in counts:
                cmd = [sys.executable, __file__, "--case", kind, how, "--members", str(k),
                       "--epochs", str(args.epochs), "--mode", args.mode,
                       *(["--limit", str(args.limit)] if args.limit else [])]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                      check=False)
                if done.returncode != 0:
                    sys.exit(f"{kind} {how} {k} failed:\n{done.stderr[-3000:]}")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                print(json.dumps(row), flush=True)
                rows.append(row)
    _table(rows)


def _table(rows: list[dict[str, Any]]) -> None:
    print("\n| model | members | separate s (per member) | fused s | speedup |")
    print("|---|---|---|---|---|")
    for row in (r for r in rows if r["how"] == "fused"):
        base = next(r for r in rows if r["how"] == "separate" and r["model"] == row["model"])
        per_member = base["seconds"] / base["members"]
        separate = per_member * row["members"]
        print(f"| {row['model']} | {row['members']} | {separate:.1f} ({per_member:.2f}) | "
              f"{row['seconds']:.1f} | {separate / row['seconds']:.1f}x |")


if __name__ == "__main__":
    main()
