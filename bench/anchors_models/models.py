"""What every tool of the real-model reference sweeps trains: models, data, fixed trials.

Issue #23, benchmark 1: a Conv2D + BatchNormalization CNN and a small Transformer classifier
(configs/digits_cnn_bn.json, configs/digits_transformer.json, both Functional models on 8x8x1
digits), each swept over the same 16 trials by every tool: the floor (floor.py), Ray Tune
(raytune.py), Optuna threads (optuna_threads.py) and clonesweep (../clonesweep_models.py).

- Data: ``clonesweep.datasets:digits_images()`` (80/20 split, seed 0: 1,437 training and 360
  validation images), the same arrays for every tool.
- Trials: three continuous hyperparameters every tool applies identically: the optimizer's
  learning rate, the rate of every ``Dropout`` layer of the model (one in each model, named
  ``drop``; the attention layer's own dropout is not a ``Dropout`` layer and stays 0.1) and
  the optimizer's weight decay. The 16 sets are drawn once with Optuna's
  ``RandomSampler(seed=0)`` (:func:`fixed_trials`); every tool runs exactly those.
- Training: Adam, sparse categorical cross-entropy, accuracy, 5 epochs, batch 64, then one
  evaluation on the validation split (batch 256); the objective is val_accuracy.

Times every script reports, defined once here for all tools:

- ``wall_s``: from the command's start to its end. The command's start is ``$BENCH_T0``
  (epoch seconds, set by models_vs_anchors.sh just before it starts the command) or, when
  unset, the script's first line.
- ``fit_eval_sum_s``: each trial's own work, from the start of ``fit`` to the end of the
  validation (``evaluate``), summed over trials; model building and compiling are not in it
  (``build_sum_s``). clonesweep's equivalent is a trial's ``train_s + eval_s``.
- ``overhead_s``: ``wall_s - fit_eval_sum_s / parallel`` (parallel 2; the floor: 1).
- ``first_epoch_s``: from the command's start to the end of the first epoch of the first
  trial (a Keras callback's ``time.time()``; clonesweep: when the driver receives it).

Keras is imported lazily, so a Ray driver can import this module cheaply.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"cnn": ROOT / "configs" / "digits_cnn_bn.json",
           "transformer": ROOT / "configs" / "digits_transformer.json"}

N_TRIALS = 16
PARALLEL = 2
EPOCHS = 5
BATCH = 64
VALIDATION_BATCH = 256

#: Each hyperparameter: (low, high, log) and its key in a clonesweep sweep file.
SPACE: dict[str, tuple[float, float, bool]] = {
    "learning_rate": (1e-4, 1e-2, True),
    "dropout": (0.0, 0.5, False),
    "weight_decay": (1e-5, 1e-2, True),
}
SWEEP_KEYS = {"learning_rate": "optimizer.learning_rate", "dropout": "layers[Dropout].rate",
              "weight_decay": "optimizer.weight_decay"}


def command_start() -> float:
    """The command's start, epoch seconds: ``$BENCH_T0`` or now (call it first thing)."""
    return float(os.environ.get("BENCH_T0") or time.time())


def arguments(description: str) -> argparse.ArgumentParser:
    """The flags every script of the benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", choices=sorted(CONFIGS), default="cnn")
    parser.add_argument("--trials", type=int, default=N_TRIALS,
                        help="the first N of the 16 fixed trials (smoke runs: 2)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    return parser


def suggest(trial: Any) -> dict[str, float]:
    """The search space, Optuna define-by-run style (an enqueued trial gets its values)."""
    return {name: trial.suggest_float(name, low, high, log=log)
            for name, (low, high, log) in SPACE.items()}


def fixed_trials(n: int = N_TRIALS) -> list[dict[str, float]]:
    """The first ``n`` of the 16 parameter sets, drawn once with RandomSampler(seed=0)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sets = [suggest(study.ask()) for _ in range(N_TRIALS)]
    return sets[:n]


def load_data() -> tuple[Any, Any, Any, Any]:
    """``(x_train, y_train, x_val, y_val)`` of ``clonesweep.datasets.digits_images()``."""
    from clonesweep.datasets import digits_images

    return digits_images()


def model_config(model: str, params: dict[str, float]) -> dict[str, Any]:
    """The model's serialized config with every ``Dropout`` layer's rate set."""
    config = copy.deepcopy(json.loads(CONFIGS[model].read_text()))
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Dropout":
            layer["config"]["rate"] = params["dropout"]
    return config


def build(model: str, params: dict[str, float], seed: int) -> Any:
    """The compiled Keras model for one trial, its weights seeded by ``seed``."""
    import keras

    keras.utils.set_random_seed(seed)
    net = keras.saving.deserialize_keras_object(model_config(model, params))
    optimizer = keras.optimizers.Adam(learning_rate=params["learning_rate"],
                                      weight_decay=params["weight_decay"])
    net.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    return net


def first_epoch_callback(log: Path) -> Any:
    """A Keras callback appending ``time.time()`` to ``log`` when a trial's first epoch ends
    (one file for every trial and process of a run; the earliest line is the run's)."""
    import keras

    class FirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if epoch == 0:
                with open(log, "a") as out:
                    out.write(f"{time.time():.6f}\n")

    return FirstEpoch()


def first_epoch(log: Path, start: float) -> float | None:
    """Seconds from ``start`` to the earliest first-epoch end written in ``log``."""
    if not log.exists():
        return None
    stamps = [float(line) for line in log.read_text().split()]
    return round(min(stamps) - start, 3) if stamps else None


def train_eval(model: str, params: dict[str, float], seed: int, data: tuple[Any, ...],
               epochs: int, log: Path) -> dict[str, float]:
    """Build, fit ``epochs`` epochs, evaluate once: val_accuracy and the seconds spent."""
    x_train, y_train, x_val, y_val = data
    t0 = time.perf_counter()
    net = build(model, params, seed)
    t1 = time.perf_counter()
    net.fit(x_train, y_train, epochs=epochs, batch_size=BATCH, verbose=0,
            callbacks=[first_epoch_callback(log)])
    _, accuracy = net.evaluate(x_val, y_val, batch_size=VALIDATION_BATCH, verbose=0)
    t2 = time.perf_counter()
    return {"val_accuracy": float(accuracy), "fit_eval_s": t2 - t1, "build_s": t1 - t0}


def line(tool: str, args: argparse.Namespace, start: float, *, parallel: int,
         fit_eval: list[float], builds: list[float], accuracies: list[float],
         first: float | None, **extra: Any) -> str:
    """The one JSON line every script prints (fields defined in this module's docstring)."""
    wall = time.time() - start
    return json.dumps({
        "tool": tool, "model": args.model, "trials": len(fit_eval), "epochs": args.epochs,
        "parallel": parallel, "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "wall_s": round(wall, 3), "fit_eval_sum_s": round(sum(fit_eval), 3),
        "build_sum_s": round(sum(builds), 3),
        "overhead_s": round(wall - sum(fit_eval) / parallel, 3),
        "first_epoch_s": first,
        "best_val_accuracy": round(max(accuracies), 4) if accuracies else None,
        "load_1m": round(os.getloadavg()[0], 2), **extra})
