"""How much does ``steps_per_execution`` save per trial? (digits MLP, one warm worker)

Runs the same trial (seeded, 5 epochs, batch 64) with steps_per_execution 1, 8 and 32,
interleaved, ``--repeats`` times each in one warm TrialRunner, and prints the median
build/train/eval seconds per setting and the ratio to 1. Used to pick the sweep-file default.

    python bench/steps_per_execution.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import TrialSpec
from clonesweep.workers.runner import TrialRunner, WorkerJob

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits_mlp.json"


class _NoPruning:
    def report(self, step: int, value: float) -> bool:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    job = WorkerJob(CONFIG.read_text(), (), DataSpec("clonesweep.datasets:digits"),
                    TrainingSpec(epochs=5, batch_size=64), ObjectiveSpec(), keep_best=False)
    runner = TrialRunner(job)
    runner.run(TrialSpec(0, {}, seed=0), _NoPruning())  # warm-up
    settings = (1, 8, 32)
    times: dict[int, list[float]] = {s: [] for s in settings}
    for r in range(args.repeats):
        for s in settings:
            res = runner.run(TrialSpec(r, {"train.steps_per_execution": s}, seed=r),
                             _NoPruning())
            times[s].append(res.timings.total_s)
    base = statistics.median(times[1])
    table = {s: {"median_s": round(statistics.median(v), 3),
                 "ratio_to_1": round(statistics.median(v) / base, 3)} for s, v in times.items()}
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
