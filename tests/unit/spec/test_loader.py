"""Good sweep files load into the frozen spec: every key, the defaults, the path rules."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import clonesweep.spec as spec_pkg
from clonesweep.errors import ConfigPathError, SpecError
from clonesweep.spec import (
    DataSpec,
    Direction,
    Distribution,
    ModelSource,
    ObjectiveSpec,
    ParamSpec,
    PlugSpec,
    ResourcesSpec,
    SweepSettings,
    TrainingSpec,
    check_parameters,
    load_sweep,
)
from clonesweep.spec.loader import check_storage_url
from tests_support import CONFIGS

D = Distribution


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(CONFIGS / "digits_mlp.json", tmp_path / "model.json")
    return tmp_path


def _load(folder: Path, text: str, name: str = "sweep.yaml") -> Any:
    path = folder / name
    path.write_text(text)
    return load_sweep(path)


def test_mlp_sample_loads() -> None:
    spec = load_sweep(CONFIGS / "digits_mlp.yaml")
    assert spec.name == "digits-mlp"
    assert spec.model.source is ModelSource.CONFIG
    assert spec.model.ref == str(CONFIGS / "digits_mlp.json")
    assert spec.model.config == json.loads((CONFIGS / "digits_mlp.json").read_text())
    assert spec.data == DataSpec("clonesweep.datasets:digits",
                                 {"validation_split": 0.2, "seed": 0})
    assert spec.training == TrainingSpec(
        epochs=5, batch_size=64, optimizer="adam", optimizer_config={"learning_rate": 1e-3},
        loss="sparse_categorical_crossentropy", metrics=("accuracy",))
    assert spec.objective == ObjectiveSpec("val_accuracy", Direction.MAXIMIZE)
    assert spec.parameters == (
        ParamSpec("layers.hidden.units", D.INT_LOG_UNIFORM_VALUES, low=16, high=256, log=True),
        ParamSpec("layers.drop.rate", D.UNIFORM, low=0.0, high=0.5),
        ParamSpec("optimizer.learning_rate", D.LOG_UNIFORM_VALUES, low=1e-4, high=1e-1,
                  log=True),
    )
    assert spec.sweep == SweepSettings(
        trials=16, parallel=2, sampler=PlugSpec("tpe", {"seed": 0}),
        pruner=PlugSpec("median", {"n_warmup_steps": 2}), run_dir=Path.cwd() / "runs",
        retries=1, seed=0)
    # No run_dir in the file: the run folder goes under ./runs of the working directory.
    assert spec.run_folder == Path.cwd() / "runs" / "digits-mlp"


def test_cnn_sample_loads() -> None:
    spec = load_sweep(str(CONFIGS / "digits_cnn.yaml"))
    assert spec.model.config is not None
    assert spec.model.config["class_name"] == "Functional"
    assert spec.data.loader == "clonesweep.datasets:digits_images"
    assert spec.sweep.trials == 8
    assert [p.path for p in spec.parameters] == [
        "layers.conv1.filters", "layers.conv2.filters", "layers.drop.rate",
        "optimizer.learning_rate"]
    assert spec.parameters[2] == ParamSpec("layers.drop.rate", D.Q_UNIFORM, low=0.0, high=0.5,
                                           step=0.05)


def test_defaults(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    spec = _load(workdir, "name: t\nmodel: {config: model.json}\n")
    assert spec.data == DataSpec("clonesweep.datasets:digits", {})
    assert spec.training == TrainingSpec()
    assert spec.objective == ObjectiveSpec()
    assert spec.parameters == ()
    assert spec.sweep == dataclasses.replace(SweepSettings(), run_dir=workdir / "runs")
    assert spec.file == workdir / "sweep.yaml"


EVERY_KEY = """
name: every.key_1
model:
  config: model.json
  imports: [my_pkg.layers, other]
data:
  loader: my_pkg.data:load
  kwargs: {size: 10, name: x, scale: 0.5, flag: true, nothing: null}
training:
  epochs: 3
  batch_size: 16
  optimizer: {name: sgd, learning_rate: 1e-2, momentum: 0.9, nesterov: true}
  loss: mse
  metrics: [mae, accuracy]
  steps_per_execution: 4
  jit_compile: true
  validation_batch_size: 512
objective: {metric: val_loss, direction: min}
parameters:
  layers.hidden.activation: {values: [relu, gelu, null]}
  layers[Dense].use_bias: {value: false}
  optimizer.momentum: {min: 0.0, max: 0.99}
  train.batch_size: {values: [16, 32]}
  train.epochs: {min: 1, max: 9, step: 2}
sweep:
  trials: 7
  parallel: 3
  sampler: random
  pruner: nop
  storage: postgresql://user@db:5432/optuna
  run_dir: out/runs
  resources: {cpu: 2, gpu: 0.25}
  retries: 0
  trial_timeout: 90
  resource_wait: 45
  seed: 4294967295
"""


def test_every_key_round_trips(workdir: Path) -> None:
    spec = _load(workdir, EVERY_KEY)
    assert spec.name == "every.key_1"
    assert spec.model.imports == ("my_pkg.layers", "other")
    assert spec.data.kwargs == {"size": 10, "name": "x", "scale": 0.5, "flag": True,
                                "nothing": None}
    assert spec.training == TrainingSpec(3, 16, "sgd", {"learning_rate": 0.01, "momentum": 0.9,
                                         "nesterov": True}, "mse", ("mae", "accuracy"), 4,
                                         True, 512)
    assert spec.objective == ObjectiveSpec("val_loss", Direction.MINIMIZE)
    assert spec.parameters == (
        ParamSpec("layers.hidden.activation", D.CATEGORICAL, values=("relu", "gelu", None)),
        ParamSpec("layers[Dense].use_bias", D.CONSTANT, values=(False,)),
        ParamSpec("optimizer.momentum", D.UNIFORM, low=0.0, high=0.99),
        ParamSpec("train.batch_size", D.CATEGORICAL, values=(16, 32)),
        ParamSpec("train.epochs", D.INT_UNIFORM, low=1, high=9, step=2),
    )
    assert spec.parameters[1].is_fixed
    assert spec.sweep == SweepSettings(
        trials=7, parallel=3, sampler=PlugSpec("random"), pruner=PlugSpec("none"),
        storage="postgresql+psycopg2://user@db:5432/optuna", run_dir=workdir / "out" / "runs",
        resources=ResourcesSpec(cpu=2.0, gpu=0.25), retries=0, trial_timeout=90.0,
        resource_wait=45.0, seed=2**32 - 1)


def test_relative_paths_resolve_against_the_sweep_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "sweeps").mkdir()
    shutil.copy(CONFIGS / "digits_mlp.json", tmp_path / "models" / "m.json")
    (tmp_path / "sweeps" / "s.yaml").write_text(
        "name: t\nmodel: {config: ../models/m.json}\n"
        "sweep: {run_dir: out, storage: 'sqlite:///study.db'}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_sweep(os.path.join("..", "sweeps", "s.yaml"))
    assert spec.model.ref == str(tmp_path / "models" / "m.json")
    assert spec.sweep.run_dir == tmp_path / "sweeps" / "out"
    assert spec.sweep.storage == f"sqlite:///{tmp_path / 'sweeps' / 'study.db'}"
    assert spec.file == tmp_path / "sweeps" / "s.yaml"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["elsewhere", "m.json", "models",
                                                           "s.yaml", "sweeps"]


@pytest.mark.parametrize(("storage", "expected"), [
    ("journal://j.log", "journal://{tmp}/j.log"),
    ("journal:///abs/j.log", "journal:///abs/j.log"),
    ("sqlite:////abs/s.db", "sqlite:////abs/s.db"),
    ("mysql+pymysql://u@h/db", "mysql+pymysql://u@h/db"),
    ("null", None),
])
def test_storage_urls(workdir: Path, storage: str, expected: str | None) -> None:
    value = storage if storage == "null" else repr(storage)
    spec = _load(workdir, f"name: t\nmodel: {{config: model.json}}\nsweep: {{storage: {value}}}\n")
    want = expected.format(tmp=workdir) if expected else None
    assert spec.sweep.storage == want


@pytest.mark.parametrize(("trackers", "mlflow", "wandb"), [
    ("", None, None),
    ("trackers: {mlflow: true}", (None, None), None),
    ("trackers: {mlflow: {tracking_uri: mlruns, experiment: lab}}",
     ("{tmp}/mlruns", "lab"), None),
    ("trackers: {mlflow: {tracking_uri: 'file:runs/ml'}}", ("{tmp}/runs/ml", None), None),
    ("trackers: {mlflow: {tracking_uri: 'file:///abs/ml'}}", ("file:///abs/ml", None), None),
    ("trackers: {mlflow: {tracking_uri: 'http://mlflow:5000'}}",
     ("http://mlflow:5000", None), None),
    ("trackers: {wandb: {}}", None, (None, None, "online", None)),
    ("trackers: {wandb: {project: p, entity: team, mode: offline, dir: w}}", None,
     ("p", "team", "offline", "{tmp}/w")),
])
def test_trackers(workdir: Path, trackers: str, mlflow: Any, wandb: Any) -> None:
    spec = _load(workdir, f"name: t\nmodel: {{config: model.json}}\n{trackers}\n")
    m, w = spec.trackers.mlflow, spec.trackers.wandb
    assert spec.trackers.any == (mlflow is not None or wandb is not None)
    if mlflow is None:
        assert m is None
    else:
        uri = mlflow[0]
        if uri is not None and uri.startswith("{tmp}"):
            uri = Path(uri.format(tmp=workdir)).as_uri()
        assert (m.tracking_uri, m.experiment) == (uri, mlflow[1])
    if wandb is None:
        assert w is None
    else:
        folder = None if wandb[3] is None else Path(wandb[3].format(tmp=workdir))
        assert (w.project, w.entity, w.mode, w.dir) == (*wandb[:3], folder)


def test_check_storage_url_for_the_cli() -> None:
    assert check_storage_url("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(SpecError, match="--storage"):
        check_storage_url("http://x", file="--storage", field="--storage")


def test_keras_file_source(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden")])
    model.save(tmp_path / "base.keras")
    spec = _load(tmp_path, "name: t\nmodel: {file: base.keras}\n"
                 "parameters:\n  layers.hidden.units: {min: 2, max: 8}\n")
    assert spec.model.source is ModelSource.FILE
    assert spec.model.ref == str(tmp_path / "base.keras")
    assert spec.model.config is not None
    assert spec.model.config["class_name"] == "Sequential"
    assert spec.model.config["config"]["layers"][1]["config"]["units"] == 3
    with pytest.raises(ConfigPathError, match="no layer named 'nope'"):
        _load(tmp_path, "name: t\nmodel: {file: base.keras}\n"
              "parameters:\n  layers.nope.units: {min: 2, max: 8}\n")


def test_factory_source_defers_layer_checks(workdir: Path) -> None:
    text = ("name: t\nmodel: {factory: 'my_pkg.models:build', imports: [my_pkg]}\n"
            "parameters:\n  layers.nope.units: {values: [8]}\n"
            "  optimizer.learning_rate: {value: 0.01}\n")
    spec = _load(workdir, text)
    assert spec.model.source is ModelSource.FACTORY
    assert spec.model.ref == "my_pkg.models:build"
    assert spec.model.config is None
    config = json.loads((CONFIGS / "digits_mlp.json").read_text())
    with pytest.raises(ConfigPathError) as info:
        check_parameters(spec.parameters, config, str(spec.file))
    assert info.value.file == str(spec.file)
    assert info.value.field == "parameters.layers.nope.units"
    assert "hidden" in str(info.value)
    check_parameters(spec.parameters[1:], config, str(spec.file))  # optimizer keys: fine


# W&B inference: (entry, distribution, low, high, log, step)
INFERENCE = [
    ("{min: 1, max: 8}", D.INT_UNIFORM, 1, 8, False, None),
    ("{min: 1, max: 8.0}", D.UNIFORM, 1, 8.0, False, None),
    ("{min: 0.1, max: 0.9}", D.UNIFORM, 0.1, 0.9, False, None),
    ("{min: 1, max: 64, log: true}", D.INT_LOG_UNIFORM_VALUES, 1, 64, True, None),
    ("{min: 1e-4, max: 1e-1, log: true}", D.LOG_UNIFORM_VALUES, 1e-4, 1e-1, True, None),
    ("{min: 0.0, max: 1.0, step: 0.25}", D.Q_UNIFORM, 0.0, 1.0, False, 0.25),
    ("{min: 0.0, max: 1.0, q: 0.25}", D.Q_UNIFORM, 0.0, 1.0, False, 0.25),
    ("{min: 2, max: 10, step: 2}", D.INT_UNIFORM, 2, 10, False, 2),
    ("{min: 1, max: 4, distribution: uniform}", D.UNIFORM, 1, 4, False, None),
    ("{min: 0, max: 1, distribution: q_uniform, q: 0.5}", D.Q_UNIFORM, 0, 1, False, 0.5),
    ("{min: 1, max: 9, distribution: int_log_uniform_values}", D.INT_LOG_UNIFORM_VALUES, 1, 9,
     True, None),
    ("{min: 0.01, max: 1, distribution: log_uniform_values}", D.LOG_UNIFORM_VALUES, 0.01, 1,
     True, None),
    ("{min: 0.01, max: 1, distribution: uniform, log: true}", D.LOG_UNIFORM_VALUES, 0.01, 1,
     True, None),
    ("{min: 2, max: 2}", D.INT_UNIFORM, 2, 2, False, None),
]


@pytest.mark.parametrize(("entry", "dist", "low", "high", "log", "step"), INFERENCE,
                         ids=[row[0] for row in INFERENCE])
def test_wandb_inference(workdir: Path, entry: str, dist: Distribution, low: float,
                         high: float, log: bool, step: float | None) -> None:
    spec = _load(workdir, f"name: t\nmodel: {{config: model.json}}\n"
                 f"parameters:\n  optimizer.beta_1: {entry}\n")
    assert spec.parameters == (ParamSpec("optimizer.beta_1", dist, low=low, high=high,
                                         log=log, step=step),)
    assert type(spec.parameters[0].low) is type(low)


@pytest.mark.parametrize(("entry", "expected"), [
    ("{value: 3}", ParamSpec("p", D.CONSTANT, values=(3,))),
    ("{value: null, distribution: constant}", ParamSpec("p", D.CONSTANT, values=(None,))),
    ("{values: [1, a, 2.5, true, null]}",
     ParamSpec("p", D.CATEGORICAL, values=(1, "a", 2.5, True, None))),
    ("{values: [1, true], distribution: categorical}",
     ParamSpec("p", D.CATEGORICAL, values=(1, True))),
])
def test_constant_and_categorical(workdir: Path, entry: str, expected: ParamSpec) -> None:
    spec = _load(workdir, f"name: t\nmodel: {{config: model.json}}\n"
                 f"parameters:\n  layers.hidden.units: {entry}\n")
    assert spec.parameters == (dataclasses.replace(expected, path="layers.hidden.units"),)


def test_exponent_floats_read_as_numbers(workdir: Path) -> None:
    spec = _load(workdir, "name: t\nmodel: {config: model.json}\n"
                 "training: {optimizer: {name: adam, learning_rate: 3e-4, epsilon: 1E-07}}\n")
    assert spec.training.optimizer_config == {"learning_rate": 3e-4, "epsilon": 1e-7}


@pytest.mark.parametrize(("word", "direction"), [
    ("max", Direction.MAXIMIZE), ("maximize", Direction.MAXIMIZE),
    ("min", Direction.MINIMIZE), ("minimize", Direction.MINIMIZE)])
def test_direction_aliases(workdir: Path, word: str, direction: Direction) -> None:
    spec = _load(workdir, f"name: t\nmodel: {{config: model.json}}\n"
                 f"objective: {{metric: loss, direction: {word}}}\n")
    assert spec.objective.direction is direction


def test_custom_optimizer_keys_are_not_checked(workdir: Path) -> None:
    spec = _load(workdir, "name: t\nmodel: {config: model.json}\n"
                 "training: {optimizer: {name: my_pkg>Fancy, warp: 9}}\n"
                 "parameters:\n  optimizer.warp: {values: [1, 2]}\n")
    assert spec.training.optimizer == "my_pkg>Fancy"
    assert spec.training.optimizer_config == {"warp": 9}


def test_multi_output_metric_names_are_accepted(workdir: Path) -> None:
    spec = _load(workdir, "name: t\nmodel: {config: model.json}\n"
                 "objective: {metric: val_out_accuracy}\n")
    assert spec.objective.metric == "val_out_accuracy"


def test_spec_is_frozen() -> None:
    spec = load_sweep(CONFIGS / "digits_mlp.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"  # type: ignore[misc]


def test_public_api() -> None:
    assert sorted(spec_pkg.__all__) == sorted([
        "DataSpec", "Direction", "Distribution", "ModelSource", "ModelSpec", "ObjectiveSpec",
        "ParamSpec", "PlugSpec", "ResourcesSpec", "SweepSettings", "SweepSpec", "TrainingSpec",
        "check_parameters", "load_sweep", "SPECIAL_METRICS", "Condition", "ConstraintSpec",
        "EnqueueFrom", "CallbackSpec"])
    for name in spec_pkg.__all__:
        assert getattr(spec_pkg, name) is not None
