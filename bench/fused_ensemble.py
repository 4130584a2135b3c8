"""Fused vs unfused ensemble training: 8 digits-MLP members, 5 epochs, batch 64, one run each.

Both runs go through ``run_ensemble`` on the same local Ray (``--parallel`` workers, one CPU
each): unfused, each member is a trial of its own on a worker; fused, the members are split
into one stacked group per worker. Worker start-up (importing TensorFlow, ~4 s, the same for
both) is excluded: the clock starts once every worker actor answers, and stops when the
ensemble's loop hands the workers back, i.e. once every member's result, predictions and model
have been fetched and recorded in the study. The study's storage (the run folder's SQLite
file, its schema) is created before either run, so that neither pays for it. Prints the wall
times, their ratio, and each member's val_accuracy and val_loss under both, with the largest
difference. ``--repeat N`` runs the pair N times (fresh workers each time) and reports the
median ratio; ``--keras-fit`` adds a third run, unfused with ``training.reuse_graphs: false``
(every member traced and trained by Keras's own ``fit``, as the ensemble benchmark's baseline
was first measured).

    python bench/fused_ensemble.py                # members 8, parallel 2
    python bench/fused_ensemble.py --repeat 3 --keras-fit
    python bench/fused_ensemble.py --members 32
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from clonesweep.orchestrator.backends.ray.backend import RayBackend
from clonesweep.orchestrator.ensemble.run import EnsembleRequest, run_ensemble
from clonesweep.orchestrator.ensemble.score import score
from clonesweep.orchestrator.model import base_model_config
from clonesweep.orchestrator.runfolder import RunFolder
from clonesweep.orchestrator.study.storage import storage_url
from clonesweep.spec import load_sweep

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits_mlp.json"
SWEEP = """
name: bench-ensemble
model: {{config: {config}}}
data: {{loader: "clonesweep.datasets:digits", kwargs: {{validation_split: 0.2, seed: 0}}}}
training:
  epochs: 5
  batch_size: 64
  optimizer: {{name: adam, learning_rate: 1.0e-3}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
objective: {{metric: val_accuracy, direction: maximize}}
parameters:
  layers.hidden.units: {{value: 64}}
sweep: {{trials: 1, parallel: {parallel}, run_dir: {run_dir}, seed: 0}}
"""


class _Timed:
    """A RayBackend whose clock starts once all its workers have imported Keras."""

    def __init__(self, inner: RayBackend) -> None:
        self.inner, self.ready = inner, 0.0
        self.finished = 0.0

    def start(self, job: Any, slots: int) -> None:
        import ray

        self.inner.start(job, slots)
        ray.get([actor.where.remote() for actor in self.inner._actors])
        self.ready = time.perf_counter()

    def shutdown(self) -> None:
        self.finished = time.perf_counter()  # every member fetched and told
        self.inner.shutdown()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _one(spec: Any, base: dict[str, Any], members: int, fused: bool,
         study: str) -> dict[str, Any]:
    backend = _Timed(RayBackend())
    outcome = run_ensemble(spec, base, backend, EnsembleRequest(
        members=members, fused=fused, study=study))
    rows = {}
    for m in outcome.members:
        assert m.result is not None and m.output is not None, m
        s = score(spec.training.loss, m.output.y_val, m.output.val_pred)
        rows[m.index] = {"val_accuracy": s["val_accuracy"], "val_loss": s["val_loss"],
                         "fused": m.output.fused}
    return {"wall_s": backend.finished - backend.ready, "held": len(outcome.held),
            "note": outcome.fused_note, "members": rows}


def _storage_ready(spec: Any, base: dict[str, Any]) -> None:
    """Create the run folder and its study database's schema before anything is timed."""
    import optuna

    RunFolder(spec.run_folder).create(spec.file, base)
    optuna.storages.RDBStorage(storage_url(spec))


def _table(unfused: dict[str, Any], fused: dict[str, Any]) -> None:
    print(f"{'member':>6} {'acc unfused':>12} {'acc fused':>10} {'loss unfused':>13} "
          f"{'loss fused':>11}")
    diff = {"val_accuracy": 0.0, "val_loss": 0.0}
    for i in sorted(unfused["members"]):
        u, f = unfused["members"][i], fused["members"][i]
        for key in diff:
            diff[key] = max(diff[key], abs(u[key] - f[key]))
        print(f"{i:>6} {u['val_accuracy']:>12.4f} {f['val_accuracy']:>10.4f} "
              f"{u['val_loss']:>13.6f} {f['val_loss']:>11.6f}")
    print("max |difference|: " + json.dumps(diff))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--keras-fit", action="store_true",
                    help="also run the members unfused on Keras's own fit (no graph reuse)")
    args = ap.parse_args()
    import ray

    ray.init(num_cpus=args.parallel, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ratios, keras_ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(SWEEP.format(config=CONFIG, parallel=args.parallel, run_dir=tmp))
        spec = load_sweep(path)
        base = base_model_config(spec)
        _storage_ready(spec, base)
        keras_fit = dataclasses.replace(
            spec, training=dataclasses.replace(spec.training, reuse_graphs=False))
        print(f"{args.members} members, 5 epochs, batch 64, {args.parallel} workers "
              "(worker start-up excluded)")
        for r in range(args.repeat):
            unfused = _one(spec, base, args.members, False, f"unfused-{r}")
            fused = _one(spec, base, args.members, True, f"fused-{r}")
            ratios.append(unfused["wall_s"] / fused["wall_s"])
            line = (f"run {r + 1}: unfused {unfused['wall_s']:.2f} s   fused "
                    f"{fused['wall_s']:.2f} s   ratio {ratios[-1]:.2f}x")
            if args.keras_fit:
                slow = _one(keras_fit, base, args.members, False, f"keras-fit-{r}")
                keras_ratios.append(slow["wall_s"] / fused["wall_s"])
                line += (f"   | unfused on Keras's fit {slow['wall_s']:.2f} s: "
                         f"{keras_ratios[-1]:.2f}x")
            print(line, flush=True)
    ray.shutdown()
    print(f"median ratio over {args.repeat} run(s): {statistics.median(ratios):.2f}x"
          + (f"   (against Keras's fit: {statistics.median(keras_ratios):.2f}x)"
             if keras_ratios else ""))
    if fused["note"]:
        print(fused["note"])
    _table(unfused, fused)


if __name__ == "__main__":
    main()
