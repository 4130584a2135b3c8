"""Ray Tune's side of bench/pruning_race.py: ASHA + OptunaSearch, one JSON line on stdout.

A function trainable builds the sweep's base model from its Keras config with the trial's
values, trains it in one ``fit`` with validation each epoch and reports ``val_accuracy``
after every epoch through a Keras callback; ASHAScheduler stops the laggards, OptunaSearch
(TPE, seed 0) picks the values, ``max_concurrent_trials`` at a time, ``reuse_actors=True``.
The data set is loaded once by the driver and shared through the object store
(``tune.with_parameters``).

ASHA's time attribute is ``step``: the 0-based epoch, the same counter clonesweep hands
Optuna's pruners (``trial.report(value, step)``), so ``--min-resource 1 --reduction-factor
3`` puts both schedulers' rungs after the same epochs (2, 4, 10 for steps 1, 3, 9).

Each report carries ``wall``: ``time.time()`` on the worker minus ``--t0`` (the moment the
caller started this process), so the curve counts this interpreter's start, Ray's start and
every import. Run it through bench/pruning_race.py (``--tool raytune``), not by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def apply_values(model_config: dict[str, Any], values: dict[str, Any]) -> float:
    """Write the trial's ``layers.<name>.<key>`` values into the model config in place and
    drop each layer's ``build_config`` (the shapes it was built for: another Conv2D width
    changes what BatchNormalization and the Dense layer get); return
    ``optimizer.learning_rate`` (the only optimizer key the race sweeps).

    Example:
        >>> cfg = {"config": {"layers": [{"config": {"name": "drop", "rate": 0.2}}]}}
        >>> apply_values(cfg, {"layers.drop.rate": 0.3, "optimizer.learning_rate": 0.01})
        0.01
        >>> cfg["config"]["layers"][0]["config"]["rate"]
        0.3
    """
    for layer in model_config["config"]["layers"]:
        layer.pop("build_config", None)
    layers = {layer["config"]["name"]: layer["config"]
              for layer in model_config["config"]["layers"]}
    learning_rate = 1e-3
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if head == "optimizer" and rest == "learning_rate":
            learning_rate = float(value)
        elif head == "layers":
            name, _, attr = rest.partition(".")
            layers[name][attr] = value
        else:
            raise ValueError(f"the race's Ray side sweeps optimizer.learning_rate and "
                             f"layers.<name>.<key> only; got {key!r}")
    return learning_rate


def make_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Optuna distributions for the W&B-shaped entries clonesweep's sweep file holds: ints
    are an IntDistribution, anything else a FloatDistribution, ``log`` as given."""
    from optuna.distributions import FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for key, entry in space.items():
        low, high, log = entry["min"], entry["max"], bool(entry.get("log", False))
        if isinstance(low, int) and isinstance(high, int):
            out[key] = IntDistribution(low, high, log=log)
        else:
            out[key] = FloatDistribution(float(low), float(high), log=log)
    return out


def trainable(config: dict[str, Any], *, data: tuple[Any, ...], model_json: str,
              epochs: int, batch_size: int, t0: float, tf_threads: int) -> None:
    import keras
    from ray import tune

    if tf_threads:
        import tensorflow as tf

        if not tf.config.threading.get_intra_op_parallelism_threads():
            tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
            tf.config.threading.set_inter_op_parallelism_threads(tf_threads)
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model_config = json.loads(model_json)
    learning_rate = apply_values(model_config, config)
    model = keras.saving.deserialize_keras_object(model_config)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            tune.report({"val_accuracy": float((logs or {})["val_accuracy"]), "step": epoch,
                         "wall": time.time() - t0})

    x_train, y_train, x_val, y_val = data
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0,
              validation_data=(x_val, y_val), callbacks=[Report()])


def _reports(results: Any) -> list[list[Any]]:
    """Every report of every trial as [wall, trial index, step, val_accuracy]; a trial that
    failed before its first report has no metrics frame."""
    reports = []
    for index in range(len(results)):
        frame = results[index].metrics_dataframe
        for _, row in frame.iterrows() if frame is not None else ():
            reports.append([round(float(row["wall"]), 3), index, int(row["step"]),
                            float(row["val_accuracy"])])
    return reports


def run(args: argparse.Namespace) -> dict[str, Any]:
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from clonesweep.datasets import digits_images

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ray.init(num_cpus=args.parallel, include_dashboard=False, log_to_driver=False)
    # metric and mode on both: max_concurrent_trials wraps the searcher in a limiter that
    # does not hand TuneConfig's on to it.
    search = OptunaSearch(space=make_space(json.loads(args.space)), metric="val_accuracy",
                          mode="max", sampler=optuna.samplers.TPESampler(seed=0))
    scheduler = ASHAScheduler(time_attr="step", metric="val_accuracy", mode="max",
                              max_t=args.epochs, grace_period=args.min_resource,
                              reduction_factor=args.reduction_factor)
    fn = tune.with_parameters(trainable, data=digits_images(),
                              model_json=Path(args.model).read_text(), epochs=args.epochs,
                              batch_size=args.batch_size, t0=args.t0, tf_threads=args.tf_threads)
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            fn,
            tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler,
                                        num_samples=args.trials,
                                        max_concurrent_trials=args.parallel, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=storage, name="pruning_race", verbose=0))
        results = tuner.fit()
        reports = _reports(results)
        answer = results.get_best_result("val_accuracy", "max", scope="last").metrics or {}
        ray.shutdown()
    return {"reports": sorted(reports), "trials": len(results), "errors": results.num_errors,
            "answer_best": answer.get("val_accuracy"),
            "tf_threads": args.tf_threads or "default"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the base model's Keras config (JSON)")
    parser.add_argument("--space", required=True, help="JSON: key -> {min, max[, log]}")
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--min-resource", type=int, required=True)
    parser.add_argument("--reduction-factor", type=int, required=True)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tf-threads", type=int, default=0, help="0: TensorFlow's default")
    parser.add_argument("--t0", type=float, required=True, help="time.time() at launch")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
