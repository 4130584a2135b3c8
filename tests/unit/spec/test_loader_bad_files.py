"""Every bad sweep file raises SpecError naming the file, the field and the value, and
leaves nothing behind on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clonesweep.errors import ConfigPathError, SpecError
from clonesweep.spec import load_sweep

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
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
]


def _snapshot(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(CONFIGS / "digits_mlp.json", tmp_path / "model.json")
    (tmp_path / "lambda.json").write_text(json.dumps(LAMBDA_MODEL))
    bare = json.loads((CONFIGS / "digits_mlp.json").read_text())["config"]
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    (tmp_path / "broken.json").write_text("{'single': 'quotes'}")
    (tmp_path / "broken.keras").write_text("not a zip")
    return tmp_path


@pytest.mark.parametrize(("text", "field", "value"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_sweep_file(workdir: Path, text: str, field: str | None, value: str) -> None:
    sweep = workdir / "sweep.yaml"
    sweep.write_text(text)
    before = _snapshot(workdir)
    with pytest.raises(SpecError) as info:
        load_sweep(str(sweep))
    message = str(info.value)
    assert message.startswith(str(sweep)), message
    assert info.value.file == str(sweep)
    if field is not None:
        assert f"field '{field}'" in message, message
        assert info.value.field == field
    assert value in message, message
    assert _snapshot(workdir) == before


@pytest.mark.parametrize(("text", "field", "value"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_cli_exits_2_and_creates_no_study(workdir: Path, text: str, field: str | None,
                                          value: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from clonesweep.cli.main import main

    monkeypatch.chdir(workdir)  # the default run folder would go under ./runs
    sweep = workdir / "sweep.yaml"
    sweep.write_text(text)
    before = _snapshot(workdir)
    assert main(["run", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert str(sweep) in err and value in err, err
    if field is not None:
        assert f"field '{field}'" in err, err
    assert _snapshot(workdir) == before


def test_layer_errors_are_config_path_errors(workdir: Path) -> None:
    sweep = workdir / "sweep.yaml"
    sweep.write_text(HEAD + "parameters:\n  layers[Dens].units: {values: [8]}\n")
    with pytest.raises(ConfigPathError, match="did you mean 'Dense'"):
        load_sweep(sweep)


def test_missing_sweep_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="not found") as info:
        load_sweep(missing)
    assert str(missing) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_empty_sweep_file(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(SpecError, match="empty"):
        load_sweep(tmp_path / "empty.yaml")


def test_storage_password_is_not_echoed(workdir: Path) -> None:
    sweep = workdir / "sweep.yaml"
    sweep.write_text(HEAD + "sweep: {storage: 'redis://user:hunter2@host/0'}\n")
    with pytest.raises(SpecError) as info:
        load_sweep(sweep)
    assert "hunter2" not in str(info.value)
    assert "user:***@host" in str(info.value)


def test_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20
