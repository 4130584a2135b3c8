"""The bad sweep files (one per mistake) and the model files they name: read by the loader's
unit test (tests/unit/spec/test_loader_bad_files.py) and by validate's
(tests/scenarios/validate/test_validate.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests_support import CONFIGS

HEAD = "name: t\nmodel: {config: model.json}\n"
LR = "parameters:\n  optimizer.learning_rate: "
DROP = "parameters:\n  layers.drop.rate: "

LAMBDA_MODEL = {
    "module": "keras",
    "class_name": "Sequential",
    "config": {
        "name": "m",
        "layers": [
            {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "in"}},
            {"module": "keras.layers", "class_name": "Lambda",
             "config": {"name": "my_lambda", "function": {"class_name": "__lambda__"}}},
        ],
    },
}

# (id, sweep file text, field expected in the message (None: no field), text of the value)
CASES = [
    ("malformed_yaml", "name: t\nmodel: {config: model.json\n", None, "line 3"),
    ("duplicate_key", HEAD + "name: u\n", None, "duplicate key 'name'"),
    ("not_a_mapping", "- name\n- model\n", None, "expected a mapping"),
    ("missing_name", "model: {config: model.json}\n", "name", "'name' is required"),
    ("bad_name_chars", "name: 'my sweep!'\nmodel: {config: model.json}\n", "name",
     "'my sweep!'"),
    ("dots_name", "name: '..'\nmodel: {config: model.json}\n", "name", "'..'"),
    ("unknown_top_key", HEAD + "trainig: {epochs: 2}\n", "trainig",
     "did you mean 'training'"),
    ("unknown_training_key", HEAD + "training: {epoch: 2}\n", "training.epoch",
     "did you mean 'epochs'"),
    ("unknown_sweep_key", HEAD + "sweep: {paralel: 2}\n", "sweep.paralel",
     "did you mean 'parallel'"),
    ("two_model_sources", "name: t\nmodel: {config: model.json, factory: 'pkg:build'}\n",
     "model", "'factory': 'pkg:build'"),
    ("no_model_source", "name: t\nmodel: {}\n", "model", "got none"),
    ("missing_model", "name: t\n", "model", "'model' is required"),
    ("missing_config_file", "name: t\nmodel: {config: nope.json}\n", "model.config",
     "'nope.json'"),
    ("lambda_layer", "name: t\nmodel: {config: lambda.json}\n", "model.config", "'my_lambda'"),
    ("bare_get_config", "name: t\nmodel: {config: bare.json}\n", "model.config",
     "'bare.json'"),
    ("bad_json", "name: t\nmodel: {config: broken.json}\n", "model.config", "line 1"),
    ("keras_not_zip", "name: t\nmodel: {file: broken.keras}\n", "model.file",
     "'broken.keras'"),
    ("bad_factory", "name: t\nmodel: {factory: no_colon}\n", "model.factory", "'no_colon'"),
    ("bad_import", HEAD.replace("}", ", imports: ['a b']}"), "model.imports[0]", "'a b'"),
    ("epochs_zero", HEAD + "training: {epochs: 0}\n", "training.epochs", "got 0"),
    ("batch_size_str", HEAD + "training: {batch_size: big}\n", "training.batch_size",
     "'big'"),
    ("bool_for_int", HEAD + "sweep: {trials: true}\n", "sweep.trials", "True"),
    ("float_for_int", HEAD + "sweep: {parallel: 2.0}\n", "sweep.parallel", "2.0"),
    ("jit_not_bool", HEAD + "training: {jit_compile: 'yes'}\n", "training.jit_compile",
     "'yes'"),
    ("metrics_not_list", HEAD + "training: {metrics: accuracy}\n", "training.metrics",
     "'accuracy'"),
    ("bad_optimizer_setting", HEAD + "training: {optimizer: {name: adam, learnig_rate: 0.1}}\n",
     "training.optimizer.learnig_rate", "did you mean 'learning_rate'"),
    ("bad_direction", HEAD + "objective: {direction: up}\n", "objective.direction", "'up'"),
    ("metric_not_logged", HEAD + "objective: {metric: val_auc}\n", "objective.metric",
     "'val_auc'"),
    ("data_kwargs_list", HEAD + "data: {kwargs: {sizes: [1, 2]}}\n", "data.kwargs.sizes",
     "[1, 2]"),
    ("bad_loader", HEAD + "data: {loader: 'not a loader'}\n", "data.loader", "'not a loader'"),
    ("min_gt_max", HEAD + DROP + "{min: 0.5, max: 0.1}\n", "parameters.layers.drop.rate",
     "(min=0.5, max=0.1)"),
    ("max_without_min", HEAD + DROP + "{max: 0.5}\n", "parameters.layers.drop.rate.min",
     "'min' is required"),
    ("log_min_zero", HEAD + LR + "{min: 0.0, max: 1.0, log: true}\n",
     "parameters.optimizer.learning_rate.min", "got 0.0"),
    ("step_zero", HEAD + DROP + "{min: 0.0, max: 0.5, step: 0}\n",
     "parameters.layers.drop.rate.step", "got 0"),
    ("log_and_step", HEAD + LR + "{min: 0.1, max: 0.5, log: true, step: 0.1}\n",
     "parameters.optimizer.learning_rate.step", "got 0.1"),
    ("q_uniform_no_step", HEAD + DROP + "{min: 0.0, max: 0.5, distribution: q_uniform}\n",
     "parameters.layers.drop.rate.step", "needs a step"),
    ("step_off_grid", HEAD + DROP + "{min: 0.0, max: 0.5, step: 0.2}\n",
     "parameters.layers.drop.rate", "'step': 0.2"),
    ("int_dist_float_bound", HEAD + "parameters:\n  layers.hidden.units: "
     "{min: 8.5, max: 64, distribution: int_uniform}\n", "parameters.layers.hidden.units.min",
     "8.5"),
    ("empty_values", HEAD + DROP + "{values: []}\n", "parameters.layers.drop.rate.values",
     "[]"),
    ("non_primitive_choice", HEAD + DROP + "{values: [[1, 2], 3]}\n",
     "parameters.layers.drop.rate.values[0]", "[1, 2]"),
    ("duplicate_choice", HEAD + DROP + "{values: [0.1, 0.1]}\n",
     "parameters.layers.drop.rate.values[1]", "0.1"),
    ("unknown_distribution", HEAD + DROP + "{min: 0.0, max: 0.5, distribution: normal}\n",
     "parameters.layers.drop.rate.distribution", "'normal'"),
    ("unknown_param_key", HEAD + DROP + "{min: 0.0, max: 0.5, mu: 1}\n",
     "parameters.layers.drop.rate.mu", "'mu'"),
    ("two_shapes", HEAD + DROP + "{value: 0.1, values: [0.2]}\n", "parameters.layers.drop.rate",
     "'values': [0.2]"),
    ("unknown_layer", HEAD + "parameters:\n  layers.hiden.units: {values: [8]}\n",
     "parameters.layers.hiden.units", "hidden, drop, out"),
    ("unknown_config_key", HEAD + "parameters:\n  layers.hidden.unit: {values: [8]}\n",
     "parameters.layers.hidden.unit", "units"),
    ("malformed_key", HEAD + "parameters:\n  hidden.units: {values: [8]}\n",
     "parameters.hidden.units", "'hidden.units'"),
    ("bad_train_key", HEAD + "parameters:\n  train.lr: {values: [8]}\n",
     "parameters.train.lr", "'train.lr'"),
    ("train_float_range", HEAD + "parameters:\n  train.batch_size: {min: 8.0, max: 64.0}\n",
     "parameters.train.batch_size", "'min': 8.0"),
    ("bad_optimizer_key", HEAD + "parameters:\n  optimizer.learnig_rate: {values: [0.1]}\n",
     "parameters.optimizer.learnig_rate", "did you mean 'learning_rate'"),
    ("bad_storage", HEAD + "sweep: {storage: 'redis://host/0'}\n", "sweep.storage",
     "'redis://host/0'"),
    ("negative_retries", HEAD + "sweep: {retries: -1}\n", "sweep.retries", "got -1"),
    ("seed_too_big", HEAD + "sweep: {seed: 4294967296}\n", "sweep.seed", "4294967296"),
    ("negative_seed", HEAD + "sweep: {seed: -1}\n", "sweep.seed", "got -1"),
    ("gpu_one_and_a_half", HEAD + "sweep: {resources: {gpu: 1.5}}\n", "sweep.resources.gpu",
     "1.5"),
    ("cpu_zero", HEAD + "sweep: {resources: {cpu: 0}}\n", "sweep.resources.cpu", "got 0"),
    ("timeout_zero", HEAD + "sweep: {trial_timeout: 0}\n", "sweep.trial_timeout", "got 0"),
    ("resource_wait_zero", HEAD + "sweep: {resource_wait: 0}\n", "sweep.resource_wait",
     "got 0"),
    ("resource_wait_text", HEAD + "sweep: {resource_wait: 5m}\n", "sweep.resource_wait",
     "'5m'"),
    ("unknown_sampler", HEAD + "sweep: {sampler: tpee}\n", "sweep.sampler",
     "did you mean 'tpe'"),
    ("unknown_pruner", HEAD + "sweep: {pruner: {name: medain}}\n", "sweep.pruner.name",
     "did you mean 'median'"),
    ("unknown_tracker", HEAD + "trackers: {mlfow: {}}\n", "trackers.mlfow",
     "did you mean 'mlflow'"),
    ("tracker_false", HEAD + "trackers: {wandb: false}\n", "trackers.wandb", "leave 'wandb' out"),
    ("wandb_mode", HEAD + "trackers: {wandb: {mode: ofline}}\n", "trackers.wandb.mode",
     "'ofline'"),
    ("wandb_key", HEAD + "trackers: {wandb: {projet: x}}\n", "trackers.wandb.projet",
     "did you mean 'project'"),
    ("mlflow_uri_scheme", HEAD + "trackers: {mlflow: {tracking_uri: 'ftp://host/x'}}\n",
     "trackers.mlflow.tracking_uri", "'ftp://host/x'"),
    ("mlflow_experiment", HEAD + "trackers: {mlflow: {experiment: 3}}\n",
     "trackers.mlflow.experiment", "3"),
]


def write_model_files(folder: Path) -> Path:
    """The model files the cases name, in ``folder``: model.json (the digits MLP), lambda.json,
    bare.json (a config without its envelope), broken.json and broken.keras."""
    shutil.copy(CONFIGS / "digits_mlp.json", folder / "model.json")
    (folder / "lambda.json").write_text(json.dumps(LAMBDA_MODEL))
    bare = json.loads((CONFIGS / "digits_mlp.json").read_text())["config"]
    (folder / "bare.json").write_text(json.dumps(bare))
    (folder / "broken.json").write_text("{'single': 'quotes'}")
    (folder / "broken.keras").write_text("not a zip")
    return folder
