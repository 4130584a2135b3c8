"""An ensemble of a model of several outputs (a dict of two heads), end to end through
``clonesweep ensemble`` on the in-process backend: each member keeps its predictions per
output, the ensemble is scored output by output under Keras's metric names, and the averaged
model averages each output. Before, every member failed (its predictions were taken for one
array)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

CODE = '''
import numpy as np

def heads(n=96):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    cls = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    aux = (x[:, 2] > 0).astype("int32")
    cut = 64
    return (x[:cut], {"cls": cls[:cut], "aux": aux[:cut]},
            x[cut:], {"cls": cls[cut:], "aux": aux[cut:]})
'''


def _model() -> dict:
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="hidden")(inp)
    h = keras.layers.Dropout(0.1, name="drop")(h)
    out = {"cls": keras.layers.Dense(3, activation="softmax", name="cls")(h),
           "aux": keras.layers.Dense(2, activation="softmax", name="aux")(h)}
    config: dict = keras.saving.serialize_keras_object(keras.Model(inp, out, name="heads"))
    return config


def test_an_ensemble_of_a_two_output_model_scores_and_averages_each_output(
        tmp_path: Path) -> None:
    (tmp_path / "cs_heads.py").write_text(CODE)
    (tmp_path / "model.json").write_text(json.dumps(_model()))
    (tmp_path / "s.yaml").write_text("""name: heads
model: {config: model.json}
data: {loader: 'cs_heads:heads'}
training: {epochs: 2, batch_size: 16}
objective: {metric: val_cls_accuracy, direction: maximize}
parameters:
  layers.hidden.units: {values: [8]}
sweep: {trials: 1}
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "clonesweep", "ensemble", "s.yaml",
                           "--members", "2", "--backend", "inprocess", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    payload = json.loads(done.stdout)
    assert payload["members_held"] == 2, payload
    ensemble = payload["ensemble"]
    assert set(ensemble) == {"val_loss", "val_cls_loss", "val_cls_accuracy", "val_aux_loss",
                             "val_aux_accuracy"}, ensemble
    assert abs(ensemble["val_loss"] - ensemble["val_cls_loss"] - ensemble["val_aux_loss"]) \
        < 1e-9
    # Each member's own score on its predictions is its objective (Keras's val_cls_accuracy).
    for member in payload["members"]:
        assert abs(member["scores"]["val_cls_accuracy"] - member["objective"]) < 1e-6, member
    averaged = keras.saving.load_model(tmp_path / "runs" / "heads" / "ensemble" /
                                       "averaged.keras", safe_mode=True, compile=False)
    out = averaged.predict(np.zeros((3, 6), "float32"), verbose=0)
    assert isinstance(out, dict) and out["cls"].shape == (3, 3) and out["aux"].shape == (3, 2)
