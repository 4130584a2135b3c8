"""``clonesweep validate``: every bad input exits 2 with file, field, value and a hint, and
leaves nothing behind; a good sweep exits 0 with a parameter count per corner."""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

import bad_sweep_files
from clonesweep.cli.main import main
from tests_support import REPO

CONFIGS = REPO / "configs"
HEAD = "name: t\nmodel: {config: model.json}\n"
UNITS = "parameters:\n  layers.hidden.units: "
DROP = "parameters:\n  layers.drop.rate: "
LR = "parameters:\n  optimizer.learning_rate: "
ACT = "parameters:\n  layers.hidden.activation: "
CODE = "cs_validate_code"
UNREACHABLE = "postgresql+psycopg2://u@127.0.0.1:1/db"

# Helpers the sweep files below import: factories, data loaders (written to a folder put on
# sys.path, outside the folder whose tree the tests compare).
CODE_TEXT = '''
import keras
import numpy as np


class Opaque(keras.layers.Layer):
    """get_config() returns an object JSON cannot hold."""

    def __init__(self, table=None, **kwargs):
        super().__init__(**kwargs)
        self.table = table if table is not None else object()

    def get_config(self):
        return {**super().get_config(), "table": self.table}

    def call(self, x):
        return x


def opaque():
    return keras.Sequential([keras.Input((64,)), Opaque(name="u"),
                             keras.layers.Dense(10, name="out")])


def with_lambda():
    return keras.Sequential([keras.Input((64,)), keras.layers.Lambda(lambda x: x * 2, name="l"),
                             keras.layers.Dense(10, name="out")])


def picky(blocks=1):
    if blocks > 2:
        raise ValueError("at most 2 blocks")
    model = keras.Sequential([keras.Input((64,))])
    for i in range(blocks):
        model.add(keras.layers.Dense(8, name=f"block{i}"))
    model.add(keras.layers.Dense(10, name="out"))
    return model


def bad_shape():
    return np.zeros((10, 3)), np.zeros(10), np.zeros((4, 3)), np.zeros(4)


def three():
    return np.zeros((10, 64)), np.zeros(10), np.zeros((4, 64))


def short_y():
    return np.zeros((10, 64)), np.zeros(9), np.zeros((4, 64)), np.zeros(4)


def _ds(x, y):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y))


def ds_with_array():
    return _ds(np.zeros((10, 64)), np.zeros(10)), np.zeros((4, 64))


def ds_nan():
    x = np.zeros((10, 64), np.float32)
    x[2, 5] = np.nan
    return _ds(x, np.zeros(10)).batch(5), _ds(x[:4], np.zeros(4)).batch(5)


def ds_labels():
    y = np.arange(10) + 3  # 3..12: the model has 10 classes
    return _ds(np.zeros((10, 64)), y), _ds(np.zeros((4, 64)), y[:4])


def ds_shape():
    return _ds(np.zeros((10, 3)), np.zeros(10)), _ds(np.zeros((4, 3)), np.zeros(4))


class OneArray(keras.utils.PyDataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        return np.zeros((4, 64))


def py_one_array():
    return OneArray(), OneArray()
'''


def _model(path: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(path.read_text())
    return config


def _unregistered() -> dict[str, Any]:
    config = _model(CONFIGS / "digits_mlp.json")
    hidden = config["config"]["layers"][1]
    hidden.update(module="nowhere.layers", class_name="NotRegisteredDense",
                  registered_name="nowhere>NotRegisteredDense")
    return config


def _lookup(vocabulary: Any) -> dict[str, Any]:
    import keras

    model = keras.Sequential([keras.Input((1,), dtype="string"),
                              keras.layers.StringLookup(vocabulary=["a", "b"], name="lk")])
    config: dict[str, Any] = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    config["config"]["layers"][1]["config"]["vocabulary"] = vocabulary
    return config


def _lambda() -> dict[str, Any]:
    config = _model(CONFIGS / "digits_mlp.json")
    drop = copy.deepcopy(config["config"]["layers"][2])
    drop.update(class_name="Lambda", config={"name": "my_lambda",
                                             "function": {"class_name": "__lambda__"}})
    config["config"]["layers"][2] = drop
    return config


def _study(folder: Path, distributions: dict[str, Any], params: dict[str, Any],
           direction: str = "maximize") -> None:
    """A study ``t`` with one complete trial, where a run of the sweep would keep it."""
    (folder / "runs" / "t").mkdir(parents=True)
    url = f"sqlite:///{folder / 'runs' / 't' / 'study.db'}"
    study = optuna.create_study(study_name="t", storage=url, direction=direction)
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                              value=0.5))


UNITS_8_16 = {"layers.hidden.units": optuna.distributions.IntDistribution(8, 16)}
PRE = {"study": lambda d: _study(d, UNITS_8_16, {"layers.hidden.units": 8})}

# (id, sweep file text, extra argv, setup, field (None: none), text of the value)
CASES: list[tuple[str, str, list[str], str | None, str | None, str]] = [
    # the file itself
    ("malformed_yaml", "name: t\nmodel: {config: model.json\n", [], None, None, "line 3"),
    ("unknown_top_key", HEAD + "trainig: {epochs: 2}\n", [], None, "trainig",
     "did you mean 'training'"),
    ("unknown_sweep_key", HEAD + "sweep: {paralel: 2}\n", [], None, "sweep.paralel",
     "did you mean 'parallel'"),
    ("unknown_entry_key", HEAD + DROP + "{min: 0.0, max: 0.5, mu: 1}\n", [], None,
     "parameters.layers.drop.rate.mu", "'mu'"),
    # config paths
    ("unknown_layer", HEAD + "parameters:\n  layers.hiden.units: {values: [8]}\n", [], None,
     "parameters.layers.hiden.units", "hidden, drop, out"),
    ("unknown_config_key", HEAD + "parameters:\n  layers.hidden.unit: {values: [8]}\n", [],
     None, "parameters.layers.hidden.unit", "units"),
    ("unknown_layer_class", HEAD + "parameters:\n  layers[Dens].units: {values: [8]}\n", [],
     None, "parameters.layers[Dens].units", "did you mean 'Dense'"),
    ("unknown_optimizer_key", HEAD + "parameters:\n  optimizer.learnig_rate: {values: [0.1]}\n",
     [], None, "parameters.optimizer.learnig_rate", "did you mean 'learning_rate'"),
    # ranges and choices
    ("min_gt_max", HEAD + DROP + "{min: 0.5, max: 0.1}\n", [], None,
     "parameters.layers.drop.rate", "(min=0.5, max=0.1)"),
    ("log_min_zero", HEAD + LR + "{min: 0.0, max: 1.0, log: true}\n", [], None,
     "parameters.optimizer.learning_rate.min", "got 0.0"),
    ("log_min_negative", HEAD + LR + "{min: -0.1, max: 1.0, distribution: log_uniform_values}"
     "\n", [], None, "parameters.optimizer.learning_rate.min", "got -0.1"),
    ("int_log_min_zero", HEAD + UNITS + "{min: 0, max: 64, log: true}\n", [], None,
     "parameters.layers.hidden.units.min", "got 0"),
    ("choice_mapping", HEAD + ACT + "{values: [relu, {name: gelu}]}\n", [], None,
     "parameters.layers.hidden.activation.values[1]", "{'name': 'gelu'}"),
    ("choice_list", HEAD + DROP + "{values: [[0.1, 0.2], 0.3]}\n", [], None,
     "parameters.layers.drop.rate.values[0]", "[0.1, 0.2]"),
    # what safe mode must refuse
    ("unregistered_custom_layer", "name: t\nmodel: {config: unregistered.json}\n", [], None,
     "model.config", "unregistered.json"),
    ("lambda_layer", "name: t\nmodel: {config: lambda.json}\n", [], None, "model.config",
     "'my_lambda'"),
    ("lambda_from_factory", f"name: t\nmodel: {{factory: '{CODE}:with_lambda'}}\n", [], None,
     "model.factory", "with_lambda"),
    ("activation_file_path", HEAD + ACT + "{values: [relu, /etc/passwd]}\n", [], None,
     "parameters.layers.hidden.activation", "'/etc/passwd'"),
    ("activation_url", HEAD + ACT + "{values: ['https://evil.example/act.py']}\n", [], None,
     "parameters.layers.hidden.activation", "'https://evil.example/act.py'"),
    ("vocabulary_path_param", "name: t\nmodel: {config: lookup.json}\nparameters:\n"
     "  layers.lk.vocabulary: {values: [/etc/passwd]}\n", [], None,
     "parameters.layers.lk.vocabulary", "'/etc/passwd'"),
    ("vocabulary_path_in_model", "name: t\nmodel: {config: lookup_path.json}\n", [], None,
     "model.config", "lookup_path.json"),
    ("non_serializable_config", f"name: t\nmodel: {{factory: '{CODE}:opaque'}}\n", [], None,
     "model.factory", "opaque"),
    # corners that do not build
    ("factory_fails_at_corner", f"name: t\nmodel: {{factory: '{CODE}:picky'}}\nparameters:\n"
     "  model.blocks: {min: 1, max: 3}\n", [], None, "parameters.model.blocks", "3"),
    ("layer_missing_from_structure", f"name: t\nmodel: {{factory: '{CODE}:picky'}}\n"
     "parameters:\n  model.blocks: {values: [1, 2]}\n  layers.block1.units: {values: [8]}\n",
     [], None, "parameters.layers.block1.units", "block0"),
    ("units_zero", HEAD + UNITS + "{min: 0, max: 8}\n", [], None,
     "parameters.layers.hidden.units", "got 0"),
    ("unknown_activation", HEAD + ACT + "{values: [relu, nosuch]}\n", [], None,
     "parameters.layers.hidden.activation", "'nosuch'"),
    ("rate_above_one", HEAD + DROP + "{values: [0.1, 1.5]}\n", [], None,
     "parameters.layers.drop.rate", "1.5"),
    # storage
    ("storage_unreachable", HEAD + f"sweep: {{storage: '{UNREACHABLE}'}}\n", [], None,
     "sweep.storage", "u@127.0.0.1:1/db"),
    ("storage_unreachable_password", HEAD + "sweep: {storage: "
     "'postgresql+psycopg2://u:hunter2@127.0.0.1:1/db'}\n", [], None, "sweep.storage",
     "u:***@127.0.0.1:1/db"),
    ("storage_flag_unreachable", HEAD, ["--storage", UNREACHABLE], None, "--storage",
     "u@127.0.0.1:1/db"),
    ("storage_wrong_scheme", HEAD + "sweep: {storage: 'redis://host/0'}\n", [], None,
     "sweep.storage", "'redis://host/0'"),
    ("storage_not_a_database", HEAD + "sweep: {storage: 'sqlite:///notes.txt'}\n", [], None,
     "sweep.storage", "notes.txt"),
    ("storage_folder_is_a_file", HEAD + "sweep: {storage: 'sqlite:///notes.txt/study.db'}\n",
     [], None, "sweep.storage", "notes.txt"),
    ("run_dir_is_a_file", HEAD + "sweep: {run_dir: notes.txt}\n", [], None, "sweep.run_dir",
     "notes.txt"),
    # resume with another search space
    ("resume_changed_range", HEAD + UNITS + "{min: 8, max: 32}\n", [], "study",
     "parameters.layers.hidden.units", "IntDistribution(low=8, high=32"),
    ("resume_removed_key", HEAD + DROP + "{min: 0.0, max: 0.5}\n", [], "study",
     "parameters.layers.hidden.units", "IntDistribution(low=8, high=16"),
    ("resume_new_key", HEAD + UNITS + "{min: 8, max: 16}\n  optimizer.learning_rate: "
     "{min: 0.001, max: 0.1, log: true}\n", [], "study", "parameters.optimizer.learning_rate",
     "log=True"),
    ("resume_other_direction", HEAD + "objective: {direction: minimize}\n" + UNITS
     + "{min: 8, max: 16}\n", [], "study", "objective", "['minimize']"),
    # seeds
    ("seed_too_big", HEAD + "sweep: {seed: 4294967296}\n", [], None, "sweep.seed",
     "4294967296"),
    ("seed_negative", HEAD + "sweep: {seed: -1}\n", [], None, "sweep.seed", "got -1"),
    ("sampler_seed_negative", HEAD + "sweep: {sampler: {name: tpe, seed: -1}}\n", [], None,
     "sweep.sampler.seed", "got -1"),
    ("sampler_seed_too_big", HEAD + "sweep: {sampler: {name: random, seed: 4294967296}}\n",
     [], None, "sweep.sampler.seed", "4294967296"),
    ("sampler_seed_float", HEAD + "sweep: {sampler: {name: tpe, seed: 1.5}}\n", [], None,
     "sweep.sampler.seed", "1.5"),
    # sampler, pruner, code, data
    ("sampler_unknown_setting", HEAD + "sweep: {sampler: {name: tpe, n_startup_trial: 3}}\n",
     [], None, "sweep.sampler.n_startup_trial", "did you mean 'n_startup_trials'"),
    ("grid_continuous_range", HEAD + DROP + "{min: 0.0, max: 0.5}\nsweep: {sampler: grid}\n",
     [], None, "parameters.layers.drop.rate", "'uniform'"),
    ("pruner_unknown_setting", HEAD + "sweep: {pruner: {name: median, n_warmup: 2}}\n", [],
     None, "sweep.pruner.n_warmup", "did you mean 'n_warmup_steps'"),
    ("warm_start_missing_study", HEAD + "sweep: {enqueue_from: nope}\n", [], None,
     "sweep.enqueue_from", "'nope'"),
    ("warm_start_study_not_in_storage", HEAD + UNITS + "{min: 8, max: 16}\n"
     "sweep: {enqueue_from: {study: other, top: 2}}\n", [], "study", "sweep.enqueue_from",
     "'other'"),
    ("missing_import", "name: t\nmodel: {config: model.json, imports: [no_such_module_xyz]}\n",
     [], None, "model.imports[0]", "'no_such_module_xyz'"),
    ("missing_loader", HEAD + "data: {loader: 'no_such_module_xyz:load'}\n", [], None,
     "data.loader", "'no_such_module_xyz:load'"),
    ("data_wrong_shape", HEAD + f"data: {{loader: '{CODE}:bad_shape'}}\n", ["--data"], None,
     "data.loader", "[10, 3]"),
    ("data_three_arrays", HEAD + f"data: {{loader: '{CODE}:three'}}\n", ["--data"], None,
     "data.loader", "tuple of length 3"),
    ("data_lengths_differ", HEAD + f"data: {{loader: '{CODE}:short_y'}}\n", ["--data"], None,
     "data.loader", "10 and 9"),
    ("data_dataset_with_array", HEAD + f"data: {{loader: '{CODE}:ds_with_array'}}\n",
     ["--data"], None, "data.loader", "tf.data, ndarray"),
    ("data_dataset_nan", HEAD + f"data: {{loader: '{CODE}:ds_nan'}}\n", ["--data"], None,
     "data.loader", "x_train[2, 5]"),
    ("data_dataset_label_range", HEAD + f"data: {{loader: '{CODE}:ds_labels'}}\n",
     ["--data"], None, "data.loader", "[3, 12]"),
    ("data_dataset_element_shape", HEAD + f"data: {{loader: '{CODE}:ds_shape'}}\n",
     ["--data"], None, "data.loader", "[10, 3]"),
    ("data_py_dataset_not_a_pair", HEAD + f"data: {{loader: '{CODE}:py_one_array'}}\n",
     ["--data"], None, "data.loader", "yielding ndarray"),
]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    shutil.copy(CONFIGS / "digits_mlp.json", folder / "model.json")
    for name, config in (("unregistered", _unregistered()), ("lambda", _lambda()),
                         ("lookup", _lookup(["a", "b"])),
                         ("lookup_path", _lookup("/etc/passwd"))):
        (folder / f"{name}.json").write_text(json.dumps(config))
    code = folder / "code"
    code.mkdir()
    (code / f"{CODE}.py").write_text(CODE_TEXT)
    return folder


@pytest.fixture
def workdir(model_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for file in model_files.glob("*.json"):
        shutil.copy(file, tmp_path / file.name)
    (tmp_path / "notes.txt").write_text("not a database\n")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(model_files / "code"))
    monkeypatch.chdir(tmp_path)  # the default run folder would go under ./runs
    return tmp_path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def test_enough_bad_inputs() -> None:
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(("text", "argv", "setup", "field", "value"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validate_refuses(workdir: Path, text: str, argv: list[str], setup: str | None,
                          field: str | None, value: str, command: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """``run`` refuses the same, before it creates anything (its data checks are on)."""
    if setup is not None:
        PRE[setup](workdir)
    sweep = workdir / "sweep.yaml"
    sweep.write_text(text)
    before = snapshot(workdir)
    if command == "run":
        argv = [a for a in argv if a != "--data"]
    assert main([command, str(sweep), *argv]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"clonesweep: error: {sweep}"), err
    if field is not None:
        assert f"field '{field}'" in err, err
    assert value in err, err
    assert "\n  hint: " in err, err
    assert "hunter2" not in out + err
    assert snapshot(workdir) == before
    if setup is None:
        assert not (workdir / "runs").exists()
    else:  # the study is as it was: no trial added
        url = f"sqlite:///{workdir / 'runs' / 't' / 'study.db'}"
        assert len(optuna.load_study(study_name="t", storage=url).trials) == 1


def test_unregistered_layer_hints_at_registration(workdir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    sweep = workdir / "sweep.yaml"
    sweep.write_text("name: t\nmodel: {config: unregistered.json}\n")
    assert main(["validate", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "NotRegisteredDense" in err and "register_keras_serializable" in err, err
    assert "model.imports" in err


def test_a_good_sweep_passes_with_counts_per_corner(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = workdir / "sweep.yaml"
    sweep.write_text(HEAD + "parameters:\n  layers.hidden.units: {min: 8, max: 32}\n"
                     "  layers.hidden.activation: {values: [relu, tanh, gelu]}\n"
                     "  switch.drop: {values: [true, false]}\n"
                     "  layers.drop.rate: {min: 0.1, max: 0.4, when: {switch.drop: true}, "
                     "otherwise: 0.0}\n")
    before = snapshot(workdir)
    assert main(["validate", str(sweep), "--json", "--data"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert snapshot(workdir) == before and not (workdir / "runs").exists()
    assert report["ok"] and report["study"] == "new"
    corners = {c["label"]: c for c in report["corners"]}
    # Dense(64 -> units) + Dense(units -> 10)
    assert corners["all-low"]["param_count"] == 64 * 8 + 8 + 8 * 10 + 10
    assert corners["all-high"]["param_count"] == 64 * 32 + 32 + 32 * 10 + 10
    seen = {c["params"].get("layers.hidden.activation") for c in report["corners"]}
    assert seen == {"relu", "tanh", "gelu"}
    rates = {c["params"]["layers.drop.rate"] for c in report["corners"]}
    assert {0.0, 0.1, 0.4} <= rates  # off (otherwise), and both bounds while on
    assert report["data"]["x_train"][1:] == [64]


def test_structural_sweep_builds_each_structure(workdir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    sweep = workdir / "sweep.yaml"
    sweep.write_text(f"name: t\nmodel: {{factory: '{CODE}:picky'}}\nparameters:\n"
                     "  model.blocks: {min: 1, max: 2}\n"
                     "  layers.block1.units: {values: [4, 16], when: {model.blocks: 2}}\n")
    assert main(["validate", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "nothing created" in out and "all-low" in out and "all-high" in out
    assert not (workdir / "runs").exists()


def test_resume_with_the_same_space_passes(workdir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    PRE["study"](workdir)
    sweep = workdir / "sweep.yaml"
    sweep.write_text(HEAD + UNITS + "{min: 8, max: 16}\n")
    before = snapshot(workdir)
    assert main(["validate", str(sweep), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["study"].startswith("resumes study 't' (1 trials)")
    assert snapshot(workdir) == before


def test_check_resume_compatible_is_callable_by_run(workdir: Path) -> None:
    """The function `clonesweep run` can call before asking for a trial."""
    from clonesweep.errors import SpecError
    from clonesweep.orchestrator.study.compat import check_resume_compatible
    from clonesweep.spec import load_sweep

    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"layers.hidden.units": 8},
                                              distributions=UNITS_8_16, value=0.5))
    sweep = workdir / "sweep.yaml"
    sweep.write_text(HEAD + UNITS + "{values: [8, 16]}\n")
    with pytest.raises(SpecError, match="search space changed") as info:
        check_resume_compatible(load_sweep(sweep), study)
    assert info.value.field == "parameters.layers.hidden.units"
    sweep.write_text(HEAD + UNITS + "{min: 8, max: 16}\n")
    check_resume_compatible(load_sweep(sweep), study)


def test_journal_storage_new_and_resumed(workdir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    sweep = workdir / "sweep.yaml"
    sweep.write_text(HEAD + UNITS + "{min: 8, max: 16}\nsweep: {storage: 'journal://j/s.log'}\n")
    before = snapshot(workdir)
    assert main(["validate", str(sweep), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["study"] == "new"
    assert snapshot(workdir) == before and not (workdir / "j").exists()
    (workdir / "j").mkdir()
    storage = JournalStorage(JournalFileBackend(str(workdir / "j" / "s.log")))
    optuna.create_study(study_name="other", storage=storage)
    before = snapshot(workdir)
    assert main(["validate", str(sweep), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["study"] == "new"
    assert snapshot(workdir) == before
    study = optuna.create_study(study_name="t", storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"layers.hidden.units": 8},
                                              distributions=UNITS_8_16, value=0.5))
    before = snapshot(workdir)
    assert main(["validate", str(sweep), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["study"].startswith("resumes study 't'")
    assert snapshot(workdir) == before


@pytest.mark.parametrize(("text", "field", "value"), [c[1:] for c in bad_sweep_files.CASES],
                         ids=[c[0] for c in bad_sweep_files.CASES])
def test_every_bad_file_is_refused_by_validate(
        tmp_path: Path, text: str, field: str | None, value: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    workdir = bad_sweep_files.write_model_files(tmp_path)
    monkeypatch.chdir(workdir)
    sweep = workdir / "sweep.yaml"
    sweep.write_text(text)
    before = snapshot(workdir)
    assert main(["validate", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clonesweep: error: {sweep}") and value in err, err
    if field is not None:
        assert f"field '{field}'" in err, err
    assert "\n  hint: " in err, err
    assert snapshot(workdir) == before
