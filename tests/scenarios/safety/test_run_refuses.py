"""`run` refuses what `validate` refuses, before it creates anything (no run folder, no
study, no Ray): every case issue 18 found, and more. Each exits 2 with the file, the field,
the value and a hint, and the folder tree is the same after as before.

Both commands run in this process through the CLI's ``main()``: nothing here starts Ray
unless a check is missing (then the run would start one and the test fails on exit 0/1).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clonesweep.cli.main import main
from tests_support import CONFIGS

LOADERS = "safety_loaders"
TRAINING = """training:
  epochs: 1
  batch_size: 32
  optimizer: {name: adam, learning_rate: 0.003}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
"""


def sweep_text(*, name: str = "t", model: str = "model.json", loader: str | None = None,
               training: str = TRAINING, parameters: str = "", sweep: str = "") -> str:
    data = f"data: {{loader: '{LOADERS}:{loader}'}}\n" if loader else \
        "data: {loader: 'clonesweep.datasets:digits', kwargs: {limit: 200}}\n"
    text = f"name: {name}\nmodel: {{config: {model}}}\n{data}{training}"
    if parameters:
        text += f"parameters:\n{parameters}"
    if sweep:
        text += f"sweep: {sweep}\n"
    return text


def edited_model(folder: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> None:
    config = json.loads((CONFIGS / "digits_mlp.json").read_text())
    edit(config["config"]["layers"][1])  # the Dense layer 'hidden'
    (folder / name).write_text(json.dumps(config))


def symlink_loop(folder: Path, name: str = "loop") -> None:
    (folder / name).symlink_to(folder / f"{name}2")
    (folder / f"{name}2").symlink_to(folder / name)


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    field: str  # the field the error names
    value: str  # text of the value the error shows
    setup: Callable[[Path], None] | None = None


def _unknown_class(folder: Path) -> None:
    edited_model(folder, "model.json", lambda layer: layer.update(class_name="NoSuchDense"))


def _os_system(folder: Path) -> None:
    edited_model(folder, "model.json", lambda layer: layer.update(
        module="os", class_name="system", registered_name=None,
        config={"command": "touch pwned"}))


def _big_file(folder: Path) -> None:
    with (folder / "sweep.yaml").open("a") as out:
        out.write(("# " + "x" * 98 + "\n") * 11_000)


def _big_file_setup(folder: Path) -> None:  # the text is written first, then grown
    pass


def _garbage_study(folder: Path) -> None:
    (folder / "runs" / "t").mkdir(parents=True)
    (folder / "runs" / "t" / "study.db").write_text("not sqlite\n")


def _file(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text("a file\n")


LONG = "n" * 300
ISSUE_CASES = [
    Case("unknown_layer_class", sweep_text(), "model.config", "model.json", _unknown_class),
    Case("layer_is_os_system", sweep_text(), "model.config", "model.json", _os_system),
    Case("unknown_loss", sweep_text(training=TRAINING.replace(
        "sparse_categorical_crossentropy", "nosuch_loss")), "training.loss", "nosuch_loss"),
    Case("unknown_optimizer", sweep_text(training=TRAINING.replace("adam", "nosuchopt")),
         "training.optimizer", "nosuchopt"),
    Case("categorical_value_does_not_build", sweep_text(
        parameters="  layers.hidden.activation: {values: [relu, nosuch]}\n"),
         "parameters.layers.hidden.activation", "nosuch"),
    Case("units_from_minus_5", sweep_text(
        parameters="  layers.hidden.units: {min: -5, max: 16}\n"),
         "parameters.layers.hidden.units", "-5"),
    Case("dropout_to_1_5", sweep_text(parameters="  layers.drop.rate: {min: 0.1, max: 1.5}\n"),
         "parameters.layers.drop.rate", "1.5"),
    Case("sampler_argument_of_wrong_type", sweep_text(
        sweep="{sampler: {name: tpe, n_startup_trials: ten}}"),
         "sweep.sampler.n_startup_trials", "ten"),
    Case("loader_returns_strings", sweep_text(loader="strings"), "data.loader", "<U"),
    Case("labels_outside_the_output", sweep_text(loader="labels_out_of_range"),
         "data.loader", "[10, 19]"),
    Case("loader_returns_a_3_tuple", sweep_text(loader="three_tuple"), "data.loader",
         "tuple of length 3"),
    Case("loader_returns_all_nan", sweep_text(loader="all_nan"), "data.loader", "x_train[0, 0]"),
    Case("model_config_is_a_symlink_loop", sweep_text(model="loop"), "model.config", "loop",
         symlink_loop),
    Case("run_dir_is_a_symlink_loop", sweep_text(sweep="{run_dir: loop/runs}"), "sweep.run_dir",
         "loop/runs", symlink_loop),
    Case("storage_is_a_symlink_loop", sweep_text(sweep="{storage: 'sqlite:///loop/study.db'}"),
         "sweep.storage", "loop/study.db", symlink_loop),
    Case("checkpoint_dir_is_a_symlink_loop", sweep_text(sweep="{checkpoint_dir: loop/ckpt}"),
         "sweep.checkpoint_dir", "loop/ckpt", symlink_loop),
    Case("run_dir_under_proc", sweep_text(sweep="{run_dir: /proc/clonesweep-runs}"),
         "sweep.run_dir", "/proc/clonesweep-runs"),
    Case("storage_under_proc", sweep_text(sweep="{storage: 'sqlite:////proc/cs/study.db'}"),
         "sweep.storage", "/proc/cs/study.db"),
    Case("name_of_300_characters", sweep_text(name=LONG), "name", "a name of 300 characters"),
    Case("sweep_file_over_1_mb", sweep_text(), "", "at most 1,048,576", _big_file_setup),
]

OWN_CASES = [
    Case("unknown_metric", sweep_text(training=TRAINING.replace(
        "[accuracy]", "[accuracy, nosuch_metric]")), "training.metrics[1]", "nosuch_metric"),
    Case("optimizer_setting_refused_at_a_corner", sweep_text(
        parameters="  optimizer.beta_1: {values: [0.9, nope]}\n"),
         "parameters.optimizer.beta_1", "nope"),
    Case("pruner_argument_of_wrong_type", sweep_text(
        sweep="{pruner: {name: median, n_startup_trials: two}}"),
         "sweep.pruner.n_startup_trials", "two"),
    Case("pruner_percentile_out_of_range", sweep_text(
        sweep="{pruner: {name: percentile, percentile: 150}}"),
         "sweep.pruner", "percentile=150"),
    Case("sampler_list_for_an_int", sweep_text(
        sweep="{sampler: {name: random, seed: [1]}}"), "sweep.sampler.seed", "[1]"),
    Case("loader_returns_inf", sweep_text(loader="some_inf"), "data.loader", "x_train[3, 5]"),
    Case("loader_returns_nan_labels", sweep_text(loader="nan_labels"), "data.loader",
         "y_val[0]"),
    Case("negative_labels", sweep_text(loader="negative_labels"), "data.loader", "[-1, 8]"),
    Case("fractional_labels", sweep_text(loader="fractional_labels"), "data.loader", "0.5"),
    Case("inputs_of_the_wrong_width", sweep_text(loader="wrong_width"), "data.loader",
         "[160, 32]"),
    Case("lengths_differ", sweep_text(loader="lengths_differ"), "data.loader", "[160, 157]"),
    Case("object_arrays", sweep_text(loader="object_arrays"), "data.loader", "object"),
    Case("empty_training_set", sweep_text(loader="empty_train"), "data.loader", "[0, 64]"),
    Case("loader_returns_a_dict", sweep_text(loader="not_a_tuple"), "data.loader", "dict"),
    Case("loader_raises", sweep_text(loader="raises"), "data.loader", "FileNotFoundError"),
    Case("loader_not_callable", sweep_text(loader="NOT_CALLABLE"), "data.loader",
         "NOT_CALLABLE"),
    Case("loader_module_missing", sweep_text().replace("clonesweep.datasets:digits",
                                                       "no_such_module_q:load"),
         "data.loader", "no_such_module_q"),
    Case("complex_inputs", sweep_text(loader="complex_inputs"), "data.loader", "complex"),
    Case("one_hot_labels_for_a_sparse_loss", sweep_text(
        loader="one_hot_labels_for_sparse_loss"), "data.loader", "[160, 10]"),
    Case("sparse_labels_for_a_dense_loss", sweep_text(training=TRAINING.replace(
        "sparse_categorical_crossentropy", "categorical_crossentropy")), "data.loader",
         "[160]"),
    Case("binary_loss_labels_above_one", sweep_text(training=TRAINING.replace(
        "sparse_categorical_crossentropy", "binary_crossentropy")), "data.loader", "[0, 9]"),
    Case("kwargs_the_loader_does_not_take", sweep_text().replace(
        "kwargs: {limit: 200}", "kwargs: {nosuch: 1}"), "data.loader", "nosuch"),
    Case("missing_import", sweep_text().replace(
        "{config: model.json}", "{config: model.json, imports: [no_such_mod_q]}"),
         "model.imports[0]", "no_such_mod_q"),
    Case("storage_is_not_a_database", sweep_text(), "sweep.run_dir", "study.db",
         _garbage_study),
    Case("run_dir_is_a_file", sweep_text(sweep="{run_dir: afile}"), "sweep.run_dir", "afile",
         _file("afile")),
    Case("checkpoint_dir_is_a_file", sweep_text(sweep="{checkpoint_dir: afile}"),
         "sweep.checkpoint_dir", "afile", _file("afile")),
    Case("checkpoint_dir_under_proc", sweep_text(sweep="{checkpoint_dir: /proc/cs-ckpt}"),
         "sweep.checkpoint_dir", "/proc/cs-ckpt"),
    Case("storage_under_sys", sweep_text(sweep="{storage: 'journal:///sys/cs/journal.log'}"),
         "sweep.storage", "/sys/cs/journal.log"),
    Case("run_dir_folder_name_too_long", sweep_text(sweep=f"{{run_dir: {LONG}/runs}}"),
         "sweep.run_dir", "has 300 bytes"),
    Case("storage_file_name_too_long", sweep_text(sweep=f"{{storage: 'sqlite:///{LONG}.db'}}"),
         "sweep.storage", "has 303 bytes"),
    Case("checkpoint_dir_name_too_long", sweep_text(sweep=f"{{checkpoint_dir: {LONG}}}"),
         "sweep.checkpoint_dir", "has 300 bytes"),
    Case("run_dir_path_too_long", sweep_text(sweep="{run_dir: " + "/".join(["d" * 200] * 21)
                                             + "}"), "sweep.run_dir", "the path has 4"),
    Case("categorical_units_zero", sweep_text(
        parameters="  layers.hidden.units: {values: [0, 8]}\n"),
         "parameters.layers.hidden.units", "0"),
    Case("dropout_choice_above_one", sweep_text(
        parameters="  layers.drop.rate: {values: [0.2, 2.0]}\n"),
         "parameters.layers.drop.rate", "2.0"),
    Case("warm_start_from_a_missing_study", sweep_text(sweep="{enqueue_from: nope}"),
         "sweep.enqueue_from", "nope"),
    Case("sweep_file_is_a_symlink_loop", "", "", "sweep.yaml", None),
    Case("unknown_layer_class_from_a_param", sweep_text(
        parameters="  layers.hidden.kernel_initializer: {values: [glorot_uniform, nosuch_init]}"
                   "\n"), "parameters.layers.hidden.kernel_initializer", "nosuch_init"),
]
CASES = ISSUE_CASES + OWN_CASES


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (symlinks not followed) with its size and mtime."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(CONFIGS / "digits_mlp.json", tmp_path / "model.json")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # safety_loaders
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_enough_cases() -> None:
    assert len(OWN_CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_before_anything_is_created(workdir: Path, case: Case, command: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    sweep = workdir / "sweep.yaml"
    if case.id == "sweep_file_is_a_symlink_loop":
        sweep.symlink_to(workdir / "sweep2.yaml")
        (workdir / "sweep2.yaml").symlink_to(sweep)
    else:
        sweep.write_text(case.text)
    if case.id == "sweep_file_over_1_mb":
        _big_file(workdir)
    elif case.setup is not None:
        case.setup(workdir)
    before = snapshot(workdir)
    argv = [command, str(sweep)] + (["--data"] if command == "validate" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clonesweep: error: {sweep}"), err
    if case.field:
        assert f"field '{case.field}'" in err, err
    assert case.value in err, err
    assert "\n  hint: " in err, err
    assert snapshot(workdir) == before
    assert not (workdir / "pwned").exists()
    assert not os.path.exists("/proc/clonesweep-runs")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_python_api_refuses_the_same_before_anything_is_created(workdir: Path,
                                                                    case: Case) -> None:
    """``clonesweep.run`` makes ``clonesweep run``'s checks: the same SpecError (file, field,
    value, hint), nothing created. In process: a check missing would train and return."""
    import clonesweep

    sweep = workdir / "sweep.yaml"
    if case.id == "sweep_file_is_a_symlink_loop":
        sweep.symlink_to(workdir / "sweep2.yaml")
        (workdir / "sweep2.yaml").symlink_to(sweep)
    else:
        sweep.write_text(case.text)
    if case.id == "sweep_file_over_1_mb":
        _big_file(workdir)
    elif case.setup is not None:
        case.setup(workdir)
    before = snapshot(workdir)
    with pytest.raises(clonesweep.SpecError) as info:
        clonesweep.run(str(sweep), backend="inprocess", progress=False)
    text = str(info.value)
    assert text.startswith(str(sweep)), text
    if case.field:
        assert f"field '{case.field}'" in text, text
    assert case.value in text, text
    assert "\n  hint: " in text, text
    assert snapshot(workdir) == before
    assert not (workdir / "pwned").exists()
