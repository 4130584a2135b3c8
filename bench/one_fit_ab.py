"""A/B in one process: a trial as one ``fit`` call (now) vs one ``fit`` + ``evaluate`` per epoch
(before), on the digits-MLP benchmark's settings (bench/digits_mlp_bench.yaml).

    python bench/one_fit_ab.py [--trials 16] [--rounds 1] [--jit]

Each trial's params are drawn from the benchmark's ranges (numpy seed 0); the two variants
run the same trial back to back, alternating which goes first. Prints the summed
build/train/eval seconds of each (the trial's timings), the summed wall time of ``run()``
(which adds ``clear_session``'s garbage collection), and whether the histories are identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import TrialSpec
from clonesweep.workers.arrays import length, take
from clonesweep.workers.engines.epochs import TrialEpochs, objective_value
from clonesweep.workers.runner import TrialRunner, WorkerJob
from clonesweep.workers.seeding import DATA_ORDER

ROOT = Path(__file__).resolve().parents[1]


class PerEpochRunner(TrialRunner):
    """The training loop before the change: fit(initial_epoch=e) + evaluate, per epoch."""

    def _train(self, spec, variant, epochs: TrialEpochs, reporter):  # type: ignore[override]
        data = self._load_data()
        x_tr, y_tr, x_va, y_va = data.x, data.y, data.x_val, data.y_val
        rng = np.random.default_rng(variant.materialized.seeds[DATA_ORDER])
        model, vbs = variant.model, self.job.training.validation_batch_size
        value = math.nan
        for epoch in range(epochs.total):
            order = rng.permutation(length(x_tr))
            t0 = time.perf_counter()
            hist = model.fit(take(x_tr, order), take(y_tr, order),
                             batch_size=epochs.batch_size, epochs=epoch + 1,
                             initial_epoch=epoch, shuffle=False, verbose=0)
            t1 = time.perf_counter()
            val = model.evaluate(x_va, y_va, batch_size=vbs, verbose=0, return_dict=True)
            t2 = time.perf_counter()
            epochs.clock.total_s += t2 - t0
            epochs.clock.eval_s += t2 - t1
            logs = {k: float(v[-1]) for k, v in hist.history.items()}
            logs.update({f"val_{k}": float(v) for k, v in val.items()})
            for key, v in logs.items():
                epochs.history.setdefault(key, []).append(v)
            value = objective_value(self.job.objective.metric, logs, epoch)
        epochs.value, epochs.engine = value, "keras-per-epoch"
        return variant, epochs


class NoPruning:
    def report(self, step: int, value: float) -> bool:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--jit", action="store_true", help="jit_compile=True for both")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="make gc.freeze() a no-op (the runner freezes after trial 1)")
    args = parser.parse_args()
    if args.no_gc_freeze:
        gc.freeze = lambda: None
    job = WorkerJob(
        base_config_json=(ROOT / "configs" / "digits_mlp.json").read_text(), imports=(),
        data=DataSpec("clonesweep.datasets:digits", {}),
        training=TrainingSpec(epochs=5, batch_size=64, optimizer="adam",
                              optimizer_config={"learning_rate": 0.001},
                              metrics=("accuracy",), jit_compile=args.jit),
        objective=ObjectiveSpec(), keep_best=False)
    runners = {"per-epoch": PerEpochRunner(job, worker="old"),
               "one-fit": TrialRunner(dataclasses.replace(job), worker="new")}
    rng = np.random.default_rng(0)
    specs = [TrialSpec(i, {"layers.hidden.units": round(math.exp(rng.uniform(
        math.log(16), math.log(256)))), "layers.drop.rate": float(rng.uniform(0, 0.5)),
        "optimizer.learning_rate": float(math.exp(rng.uniform(math.log(1e-4),
                                                               math.log(1e-1))))},
        seed=1000 + i) for i in range(args.trials)]
    for runner in runners.values():  # warm-up: first-trial costs of the process
        runner.run(TrialSpec(999, {}, seed=1), NoPruning())
    sums = {name: np.zeros(3) for name in runners}
    walls = dict.fromkeys(runners, 0.0)
    same = 0
    for _ in range(args.rounds):
        for i, spec in enumerate(specs):
            order = list(runners) if i % 2 == 0 else list(runners)[::-1]
            results = {}
            for name in order:
                t0 = time.perf_counter()
                results[name] = runners[name].run(spec, NoPruning())
                walls[name] += time.perf_counter() - t0
            for name, result in results.items():
                t = result.timings
                sums[name] += (t.build_s, t.train_s, t.eval_s)
            same += results["per-epoch"].history == results["one-fit"].history
    for name, (b, tr, ev) in sums.items():
        print(f"{name:10s} build {b:6.2f} s  train {tr:6.2f} s  eval {ev:6.2f} s  "
              f"total {b + tr + ev:6.2f} s  run() wall {walls[name]:6.2f} s")
    old, new = sums["per-epoch"].sum(), sums["one-fit"].sum()
    print(f"one-fit / per-epoch = {new / old:.3f}; identical histories: "
          f"{same}/{args.trials * args.rounds}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
