"""Fused vs unfused ensemble training: 8 digits-MLP members, 5 epochs, batch 64, one run each.

Both runs go through ``run_ensemble`` on the same local Ray (``--parallel`` workers, one CPU
each): unfused, each member is a trial of its own on a worker; fused, the members are split
into one stacked group per worker. Worker start-up (importing TensorFlow, ~9 s, the same for
both) is excluded: the clock starts once every worker actor answers, and stops when the last
member's result is in. Prints the wall times, their ratio, and each member's val_accuracy and
val_loss under both, with the largest difference.

    python bench/fused_ensemble.py                # members 8, parallel 2
    python bench/fused_ensemble.py --members 8 --parallel 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from clonesweep.orchestrator.ensemble import EnsembleRequest, run_ensemble
from clonesweep.orchestrator.ensemble_score import score
from clonesweep.orchestrator.model import base_model_config
from clonesweep.orchestrator.ray_backend import RayBackend
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

    def poll(self, timeout: float) -> Any:
        events = self.inner.poll(timeout)
        if events:
            self.finished = time.perf_counter()
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _one(spec: Any, base: dict[str, Any], members: int, fused: bool) -> dict[str, Any]:
    backend = _Timed(RayBackend())
    outcome = run_ensemble(spec, base, backend, EnsembleRequest(  # type: ignore[arg-type]
        members=members, fused=fused, study="fused" if fused else "unfused"))
    rows = {}
    for m in outcome.members:
        assert m.result is not None and m.output is not None, m
        s = score(spec.training.loss, m.output.y_val, m.output.val_pred)
        rows[m.index] = {"val_accuracy": s["val_accuracy"], "val_loss": s["val_loss"],
                         "fused": m.output.fused}
    return {"wall_s": backend.finished - backend.ready, "held": len(outcome.held),
            "note": outcome.fused_note, "members": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args()
    import ray

    ray.init(num_cpus=args.parallel, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(SWEEP.format(config=CONFIG, parallel=args.parallel, run_dir=tmp))
        spec = load_sweep(path)
        base = base_model_config(spec)
        unfused = _one(spec, base, args.members, fused=False)
        fused = _one(spec, base, args.members, fused=True)
    ray.shutdown()
    print(f"{args.members} members, 5 epochs, batch 64, {args.parallel} workers "
          "(worker start-up excluded)")
    print(f"unfused: {unfused['wall_s']:.2f} s   fused: {fused['wall_s']:.2f} s   "
          f"ratio: {unfused['wall_s'] / fused['wall_s']:.2f}x")
    if fused["note"]:
        print(fused["note"])
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


if __name__ == "__main__":
    main()
