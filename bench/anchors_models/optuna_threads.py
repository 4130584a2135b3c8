"""Plain Optuna: the fixed trials enqueued, ``n_jobs=2`` threads in one process.

The objective builds, trains and evaluates one trial (models.train_eval); the study's sampler
never samples (every trial is enqueued). One JSON line (fields: models.py's docstring).

    python bench/anchors_models/optuna_threads.py --model cnn [--trials 2 --epochs 1]
"""

from __future__ import annotations

import models

START = models.command_start()

import os  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def main() -> None:
    args = models.arguments(__doc__.splitlines()[0]).parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import keras  # noqa: F401  (the backend's import, before any thread starts)

    data = models.load_data()
    results: list[dict[str, float]] = []
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "first_epoch.log"

        def objective(trial: Any) -> float:
            params = models.suggest(trial)
            result = models.train_eval(args.model, params, trial.number, data, args.epochs,
                                       log)
            with lock:
                results.append(result)
            return result["val_accuracy"]

        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        for params in models.fixed_trials(args.trials):
            study.enqueue_trial(params)
        study.optimize(objective, n_trials=args.trials, n_jobs=models.PARALLEL)
        first = models.first_epoch(log, START)
    failed = sum(t.state != optuna.trial.TrialState.COMPLETE for t in study.trials)
    print(models.line("optuna", args, START, parallel=models.PARALLEL,
                      fit_eval=[r["fit_eval_s"] for r in results],
                      builds=[r["build_s"] for r in results],
                      accuracies=[r["val_accuracy"] for r in results], first=first,
                      failed=failed), flush=True)


if __name__ == "__main__":
    main()
