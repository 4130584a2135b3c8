"""clonesweep's side of the sweep benchmark: the reference sweep end to end, one JSON line.

Runs bench/digits_mlp_bench.yaml through the same path as ``clonesweep run`` (embedded local
Ray with 2 CPUs, a fresh SQLite study in a temporary run folder) and prints its wall time
from interpreter start, the trials' own seconds (build, fit, evaluate; summed) and the
orchestration overhead: wall - (sum of trial seconds / parallel).

    python bench/clonesweep_sweep.py
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from clonesweep.cli.progress import LineProgress  # noqa: E402
from clonesweep.orchestrator import base_model_config, run_sweep  # noqa: E402
from clonesweep.orchestrator.backends.ray.backend import RayBackend  # noqa: E402
from clonesweep.spec import load_sweep  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_sweep(HERE / "digits_mlp_bench.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        spec = replace(spec, sweep=replace(spec.sweep, run_dir=Path(tmp)))
        backend = RayBackend(resources=spec.sweep.resources)
        outcome = run_sweep(spec, base_model_config(spec), backend, LineProgress(sys.stderr))
    wall = time.perf_counter() - T_START
    trial_s = sum(outcome.trial_s.values())
    print(json.dumps({
        "tool": "clonesweep", "end_to_end_s": round(wall, 2),
        "sweep_s": round(outcome.wall_s, 2), "trials": outcome.counts.finished,
        "complete": outcome.counts.complete,
        "trial_seconds": {k: round(v, 2) for k, v in outcome.trial_s.items()},
        "trial_sum_s": round(trial_s, 2),
        "overhead_s": round(wall - trial_s / spec.sweep.parallel, 2),
        "best_val_accuracy": None if outcome.best is None else round(outcome.best.value, 4),
    }))


if __name__ == "__main__":
    main()
