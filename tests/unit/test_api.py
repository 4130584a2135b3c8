"""The Python API: docs/api.md's example runs as written; bad input fails like the CLI's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import clonesweep
from tests_support import REPO, write_sweep

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
