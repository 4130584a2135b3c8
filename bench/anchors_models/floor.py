"""The floor: the fixed trials trained back to back in one warm process (no orchestration).

``fit_eval_sum_s / 2`` is what two perfectly fed workers would need for the trials' own work
(two trainings at once on 2 cores each run somewhat slower, so it is a bound, not a target).
One JSON line (fields: models.py's docstring; ``import_and_data_s`` is Keras's import and the
data load, before the first trial).

    python bench/anchors_models/floor.py --model cnn [--trials 2 --epochs 1]
"""

from __future__ import annotations

import models

START = models.command_start()

import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    args = models.arguments(__doc__.splitlines()[0]).parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    trials = models.fixed_trials(args.trials)
    t0 = time.perf_counter()
    import keras  # noqa: F401  (imports the backend: part of the warm-up, timed apart)

    data = models.load_data()
    import_s = time.perf_counter() - t0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "first_epoch.log"
        for seed, params in enumerate(trials):
            results.append(models.train_eval(args.model, params, seed, data, args.epochs, log))
        first = models.first_epoch(log, START)
    print(models.line("floor", args, START, parallel=1,
                      fit_eval=[r["fit_eval_s"] for r in results],
                      builds=[r["build_s"] for r in results],
                      accuracies=[r["val_accuracy"] for r in results], first=first,
                      import_and_data_s=round(import_s, 3),
                      floor_2_workers_s=round(sum(r["fit_eval_s"] for r in results) / 2, 3)),
          flush=True)


if __name__ == "__main__":
    main()
