"""The Python API: docs/api.md's example runs as written; bad input fails like the CLI's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import clonesweep
from tests_support import REPO, counting_loader, write_sweep

DOC = REPO / "docs" / "api.md"


def _example() -> str:
    text = DOC.read_text()
    section = text[text.index("## Example"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_documented_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # the dict's run_dir ("runs") resolves here
    scope: dict[str, Any] = {}
    exec(compile(_example(), str(DOC), "exec"), scope)
    result, members = scope["result"], scope["members"]
    assert result.outcome.counts.finished == 3
    assert result.best is not None and set(result.best.params) == {
        "layers.hidden.units", "optimizer.learning_rate"}
    frame = scope["frame"]
    assert len(frame) == 3 and "val_accuracy" in frame.columns
    assert "params.layers.hidden.units" in frame.columns
    assert len(scope["curve"]) == 3
    assert scope["study"].metric_names == ["val_accuracy"]
    best = scope["best"]
    assert best.get_layer("hidden").units == result.best.params["layers.hidden.units"]
    x_val = scope["data"][2]
    assert best.predict(x_val, verbose=0).shape == (64, 2)
    # The ensemble took the best trial's params; both members are held and scored.
    assert members.report.held == 2
    assert members.outcome.source.startswith(f"trial {result.best.number} ")
    assert 0.0 <= members.scores["val_accuracy"] <= 1.0
    assert scope["averaged"].predict(x_val, verbose=0).shape == (64, 2)
    out = capsys.readouterr()
    assert "A new study created" not in out.err + out.out  # Optuna's INFO stays quiet
    # The run folder keeps the sweep as run and the in-memory model's config.
    folder = tmp_path / "runs" / "notebook-demo"
    assert (folder / "sweep.yaml").exists() and (folder / "base_config.json").exists()


def test_run_and_ensemble_call_a_sweep_s_loader_once_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loader, calls = counting_loader(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_sweep(tmp_path, trials=2, epochs=1, loader=loader)
    clonesweep.run(path, backend="inprocess", progress=False)
    assert len(calls.read_text().splitlines()) == 1
    clonesweep.ensemble(path, members=2, backend="inprocess")
    assert len(calls.read_text().splitlines()) == 2


def test_bad_override_and_data_name_the_field(tmp_path: Path) -> None:
    path = write_sweep(tmp_path)
    with pytest.raises(clonesweep.SpecError) as info:
        clonesweep.run(path, trials=2, parallell=2)
    assert "sweep.parallell" in str(info.value) and "parallel" in str(info.value)
    x = np.zeros((4, 2), "float32")
    with pytest.raises(clonesweep.SpecError) as bad:
        clonesweep.run(path, data=(x, x))
    assert "data=" in str(bad.value)
    assert not (tmp_path / "runs").exists()


def _model() -> Any:
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="hidden"),
                             keras.layers.Dense(2, activation="softmax", name="out")])


def _data(x_nan: bool = False, labels: int = 2) -> tuple[Any, ...]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 4)).astype("float32")
    if x_nan:
        x[5, 1] = np.nan
    y = (np.arange(48) % labels).astype("int32")
    return (x[:32], y[:32], x[32:], y[32:])


SWEEP = {"name": "checked", "training": {"epochs": 1, "batch_size": 16},
         "objective": {"metric": "val_accuracy", "direction": "maximize"},
         "parameters": {"layers.hidden.units": {"values": [2, 4]}}}


def _refused(call: Any, folder: Path) -> str:
    """The SpecError ``call`` raises, as text; the folder tree unchanged and no temporary
    file named in it."""
    before = sorted(folder.rglob("*"))
    with pytest.raises(clonesweep.SpecError) as info:
        call()
    assert sorted(folder.rglob("*")) == before
    text = str(info.value)
    assert "clonesweep-api-" not in text and "\n  hint: " in text, text
    return text


def test_in_memory_model_and_data_get_run_s_checks_before_anything_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `clonesweep run` checks, for what a notebook holds: arrays with NaN, labels the
    model's output cannot take, a search-space value the in-memory model cannot build, a
    loss Keras does not know, a sampler argument of the wrong type given as an override; the
    error names the caller's file (or <dict>), the field and the value."""
    monkeypatch.chdir(tmp_path)
    model = _model()
    text = _refused(lambda: clonesweep.run(SWEEP, model=model, data=_data(x_nan=True),
                                           backend="inprocess", progress=False), tmp_path)
    assert text.startswith("<dict>: field 'data': data= holds x_train with 1 NaN"), text
    assert "x_train[5, 1]" in text
    text = _refused(lambda: clonesweep.run(SWEEP, model=model, data=_data(labels=5),
                                           backend="inprocess", progress=False), tmp_path)
    assert text.startswith("<dict>: field 'data': data= holds y_train from 0 to 4"), text
    bad_units = {**SWEEP, "parameters": {"layers.hidden.units": {"values": [0, 4]}}}
    text = _refused(lambda: clonesweep.run(bad_units, model=model, data=_data(),
                                           backend="inprocess", progress=False), tmp_path)
    assert text.startswith("<dict>: field 'parameters.layers.hidden.units'"), text
    bad_loss = {**SWEEP, "training": {**SWEEP["training"], "loss": "nosuch_loss"}}
    text = _refused(lambda: clonesweep.ensemble(bad_loss, members=2, model=model,
                                                data=_data(), backend="inprocess"), tmp_path)
    assert text.startswith("<dict>: field 'training.loss'") and "nosuch_loss" in text, text
    path = write_sweep(tmp_path)
    text = _refused(lambda: clonesweep.run(
        path, sampler={"name": "tpe", "n_startup_trials": "ten"}, backend="inprocess",
        progress=False), tmp_path)
    assert text.startswith(f"{path}: field 'sweep.sampler.n_startup_trials'"), text
    assert not (tmp_path / "runs").exists()


@pytest.mark.integration
def test_in_memory_data_and_model_on_ray(ray_cluster: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """On Ray the arrays travel through the object store: the workers trained on exactly
    them (the fingerprint each trial records is the arrays' own)."""
    import keras

    from clonesweep.workers.arrays import data_fingerprint

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    data = (x[:64], y[:64], x[64:], y[64:])
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="hidden"),
                              keras.layers.Dense(2, activation="softmax", name="out")])
    sweep = {"name": "on-ray", "training": {"epochs": 1, "batch_size": 32},
             "objective": {"metric": "val_accuracy", "direction": "maximize"},
             "parameters": {"layers.hidden.units": {"values": [2, 4]}}}
    result = clonesweep.run(sweep, model=model, data=data, address=ray_cluster, trials=2,
                            parallel=2, progress=False)
    assert result.outcome.counts.complete == 2
    prints = {t.user_attrs["data_fingerprint"] for t in result.study.get_trials()}
    assert prints == {data_fingerprint(data)}
