"""Each Ray worker's memory with arrays loaded once on the driver and shared through Ray's
object store, against every worker calling the loader itself.

    python bench/data_memory.py                    # 160 MB of arrays, 2 workers, both modes
    python bench/data_memory.py --mb 200 --slots 2

Each mode runs in a fresh process: an embedded local Ray (the real ``RayBackend``), the
workers train one trial each of a tiny Dense model on the arrays (one epoch), and then, with
the workers still holding their data as they do between trials, each worker's RSS and USS
(``psutil``'s unique set size: memory no other process shares) are read. ``shared``: the
driver calls the loader once and ``ray.put``\\ s the arrays (today's behaviour);
``per-worker``: the Ray backend's sharing is switched off, so each worker calls the loader
(the behaviour before). The loader generates float32 arrays (no file read).

The figures read as: USS is what each worker costs on its own; the object-store copy is
counted once per node (in Ray's shared memory, not in any worker's USS). A worker still
converts the training arrays to TensorFlow tensors for Keras's fit (its own copy), so
sharing removes the loader's copy per worker, not every copy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FEATURES = 256


def arrays(mb: float = 160.0, seed: int = 0) -> tuple[Any, ...]:
    """The loader: float32 x of ``mb`` megabytes (80 % training, 20 % validation)."""
    import numpy as np

    n = int(mb * 2**20 / (FEATURES * 4))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, FEATURES), dtype=np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    cut = int(0.8 * n)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _model_json() -> str:
    import keras

    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    return json.dumps(keras.saving.serialize_keras_object(model))


def one_mode(mode: str, mb: float, slots: int) -> dict[str, Any]:
    import psutil
    import ray

    import clonesweep.workers.given as given
    from clonesweep.orchestrator.backends.ray.backend import RayBackend
    from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
    from clonesweep.trials import TrialResult, TrialSpec
    from clonesweep.workers.runner import WorkerJob

    if mode == "per-worker":  # the workers call the loader themselves (before the change)
        given.shared_arrays = lambda data: None  # type: ignore[assignment]
    job = WorkerJob(base_config_json=_model_json(), imports=(),
                    data=DataSpec("data_memory:arrays", {"mb": mb}),
                    training=TrainingSpec(epochs=1, batch_size=4096, validation_batch_size=4096),
                    objective=ObjectiveSpec(metric="val_accuracy"), keep_best=False,
                    await_pruning=False)
    backend = RayBackend()
    t0 = time.perf_counter()
    backend.start(job, slots)
    for number in range(slots):
        backend.submit(TrialSpec(number, {}, seed=number))
    results: list[TrialResult] = []
    while len(results) < slots:
        results += [e for e in backend.poll(1.0) if isinstance(e, TrialResult)]
    wall = time.perf_counter() - t0
    workers = []
    for actor in backend._actors:  # a benchmark may read the backend's own actors
        _, pid = ray.get(actor.where.remote())
        info = psutil.Process(pid).memory_full_info()
        workers.append({"pid": pid, "rss_mb": round(info.rss / 2**20, 1),
                        "uss_mb": round(info.uss / 2**20, 1)})
    backend.shutdown()
    return {"mode": mode, "data_mb": mb, "slots": slots, "wall_s": round(wall, 1),
            "states": [r.state.value for r in results],
            "messages": [r.message[:200] for r in results if r.message],
            "workers": workers,
            "mean_rss_mb": round(sum(w["rss_mb"] for w in workers) / len(workers), 1),
            "mean_uss_mb": round(sum(w["uss_mb"] for w in workers) / len(workers), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=160.0)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--mode", choices=["shared", "per-worker"])
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(one_mode(args.mode, args.mb, args.slots)))
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    rows = []
    for mode in ("per-worker", "shared"):
        done = subprocess.run([sys.executable, __file__, "--mode", mode, "--mb", str(args.mb),
                               "--slots", str(args.slots)], env=env, capture_output=True,
                              text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{mode:>10}: {args.slots} workers, {args.mb:g} MB of arrays: mean RSS "
              f"{row['mean_rss_mb']} MB, mean USS {row['mean_uss_mb']} MB per worker "
              f"({row['states']}, {row['wall_s']} s)")
    before, after = rows
    print(json.dumps({"bench": "data_memory", "uss_saved_mb_per_worker":
                      round(before["mean_uss_mb"] - after["mean_uss_mb"], 1), "rows": rows}))


if __name__ == "__main__":
    main()
