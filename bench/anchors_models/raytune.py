"""Ray Tune: OptunaSearch with the fixed trials as ``points_to_evaluate``, reuse_actors=True,
2 trials at a time on a local Ray of 2 CPUs started by the script (its start is in the wall).

The data go to the workers through ``tune.with_parameters`` (Ray's object store); each trial
is a function trainable that builds, trains and evaluates (models.train_eval) and reports
once. One JSON line (fields: models.py's docstring; ``ray_init_s``, ``tuner_fit_s`` and
``worker_pids`` besides).

    python bench/anchors_models/raytune.py --model cnn [--trials 2 --epochs 1]
"""

from __future__ import annotations

import models

START = models.command_start()

import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent


def trainable(config: dict[str, Any], model: str, epochs: int, data: Any, log: str,
              trials: list[dict[str, float]]) -> None:
    """One trial on a Ray Tune worker (``config``: its params from OptunaSearch, one of
    ``trials``, whose index seeds it as the other tools seed it)."""
    import keras  # noqa: F401  (the worker's first import of Keras: not in build_s)
    import models as worker_models  # the worker imports it through PYTHONPATH
    from ray import tune

    params = dict(config)
    seed = trials.index(params) if params in trials else 0
    result = worker_models.train_eval(model, params, seed, data, epochs, Path(log))
    tune.report({**result, "pid": os.getpid()})


def main() -> None:
    args = models.arguments(__doc__.splitlines()[0]).parse_args()
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = models.fixed_trials(args.trials)
    data = models.load_data()
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "first_epoch.log"
        t0 = time.perf_counter()
        ray.init(num_cpus=models.PARALLEL, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3"}})
        ray_init_s = time.perf_counter() - t0
        search = OptunaSearch(space=models.suggest, metric="val_accuracy", mode="max",
                              points_to_evaluate=trials,
                              sampler=optuna.samplers.RandomSampler(seed=0))
        tuner = tune.Tuner(
            tune.with_parameters(trainable, model=args.model, epochs=args.epochs, data=data,
                                 log=str(log), trials=trials),
            tune_config=tune.TuneConfig(search_alg=search, num_samples=args.trials,
                                        max_concurrent_trials=models.PARALLEL,
                                        reuse_actors=True),
            run_config=tune.RunConfig(storage_path=str(Path(tmp) / "ray_results"), verbose=0),
        )
        t1 = time.perf_counter()
        results = tuner.fit()
        tuner_fit_s = time.perf_counter() - t1
        frame = results.get_dataframe()
        ray.shutdown()
        first = models.first_epoch(log, START)
    print(models.line("raytune", args, START, parallel=models.PARALLEL,
                      fit_eval=list(frame["fit_eval_s"]), builds=list(frame["build_s"]),
                      accuracies=list(frame["val_accuracy"]), first=first,
                      errors=int(results.num_errors), worker_pids=int(frame["pid"].nunique()),
                      ray_init_s=round(ray_init_s, 3), tuner_fit_s=round(tuner_fit_s, 3)),
          flush=True)


if __name__ == "__main__":
    main()
