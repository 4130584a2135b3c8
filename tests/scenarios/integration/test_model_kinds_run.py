"""``clonesweep run`` (the real sweep loop, in-process backend) reaches COMPLETE trials on real
model shapes: a Conv+BatchNorm CNN, a small Transformer classifier (MultiHeadAttention), an
Embedding+GRU text model, a keras.applications model at a small input, a subclassed model and
a keras-hub backbone with a classification head swept by their constructor arguments; and a
short ``ensemble`` trains members of one of them. Tiny data, one epoch, two trials each.

On the real Ray cluster (the session's): ``run`` for the CNN, the Transformer, the GRU and the
keras-hub classifier, ``ensemble`` (2 members) for the CNN and the Transformer. The workers
never import this file's loaders: the driver loads the arrays once and they reach the workers
through Ray's object store. MobileNetV3Small stays in process (a trial takes about a minute
alone at low load, several on a loaded machine). A loader returning tf.data datasets runs
in process (a Ray worker could not import a loader written to a temporary folder)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from clonesweep.cli.main import main
from clonesweep.orchestrator.study.journal import journal_storage

CODE = "cs_kinds_e2e"
CODE_TEXT = '''
import numpy as np

rng = np.random.default_rng(0)


def images(n=24):
    x = rng.random((n, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, n).astype("int32")
    return x[:16], y[:16], x[16:], y[16:]


def tokens(n=24):
    x = rng.integers(1, 50, (n, 8)).astype("int32")
    y = (x[:, 0] > 25).astype("int32")
    return x[:16], y[:16], x[16:], y[16:]


def tf_tokens(n=24):
    import tensorflow as tf

    x, y, xv, yv = tokens(n)
    return (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(16, seed=0),
            tf.data.Dataset.from_tensor_slices((xv, yv)).batch(4))


def bert(n=24):
    ids = rng.integers(1, 50, (n, 8)).astype("int32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    y = (ids[:, 0] > 25).astype("int32")
    cut = lambda a, s: {k: v[s] for k, v in a.items()}
    return cut(x, slice(0, 16)), y[:16], cut(x, slice(16, None)), y[16:]
'''


def conv_bn() -> Any:
    import keras

    L = keras.layers
    inp = keras.Input((32, 32, 3))
    h = L.Conv2D(8, 3, name="conv")(inp)
    h = L.BatchNormalization(name="bn")(h)
    h = L.GlobalAveragePooling2D()(L.ReLU()(h))
    return keras.Model(inp, L.Dense(10, activation="softmax", name="out")(h))


def transformer() -> Any:
    import keras

    L = keras.layers
    inp = keras.Input((8,), dtype="int32")
    x = L.Embedding(50, 16, name="embed")(inp)
    x = L.LayerNormalization()(x + L.MultiHeadAttention(2, 8, name="mha")(x, x))
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(2, activation="softmax", name="out")(x))


def gru() -> Any:
    import keras

    L = keras.layers
    return keras.Sequential([keras.Input((8,), dtype="int32"), L.Embedding(50, 8, name="embed"),
                             L.GRU(8, name="gru"), L.Dense(2, activation="softmax", name="out")])


def mobilenet() -> Any:
    import keras

    return keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=10)


def bert_classifier() -> Any:
    hub = pytest.importorskip("keras_hub")
    backbone = hub.models.BertBackbone(vocabulary_size=50, num_layers=1, num_heads=2,
                                       hidden_dim=8, intermediate_dim=16, max_sequence_length=8)
    return hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None,
                                         activation="softmax")


def subclassed() -> Any:
    from custom_layers import TinyClassifier  # one module object (tests/unit/workers on sys.path)
    return TinyClassifier(input_dim=64, classes=10)


CASES: dict[str, tuple[Callable[[], Any], str, str, str]] = {
    # name: (model, loader, imports, parameters)
    "conv_bn": (conv_bn, "images", "", "  layers.conv.filters: {values: [4, 8]}\n"),
    "transformer": (transformer, "tokens", "", "  layers.mha.num_heads: {values: [1, 2]}\n"),
    "gru": (gru, "tokens", "", "  layers.gru.units: {values: [4, 8]}\n"),
    "gru_tf_data": (gru, "tf_tokens", "", "  layers.gru.units: {values: [4, 8]}\n"),
    "mobilenet": (mobilenet, "images", "", "  layers[Dropout].rate: {min: 0.1, max: 0.3}\n"),
    "subclassed": (subclassed, "", "custom_layers", "  model.hidden: {values: [4, 8]}\n"),
    "keras_hub": (bert_classifier, "bert", "keras_hub",
                  "  model.backbone.config.num_layers: {values: [1, 2]}\n"),
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / f"{CODE}.py").write_text(CODE_TEXT)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "unit" / "workers"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sweep_file(folder: Path, name: str) -> Path:
    import keras

    builder, loader, imports, parameters = CASES[name]
    config = keras.saving.serialize_keras_object(builder())
    (folder / f"{name}.json").write_text(json.dumps(config))
    keras.utils.clear_session()
    data = f"data: {{loader: '{CODE}:{loader}'}}\n" if loader else ""
    imports_line = f", imports: [{imports}]" if imports else ""
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nmodel: {{config: {name}.json{imports_line}}}\n{data}"
                    "training: {epochs: 1, batch_size: 8}\n"
                    "sweep: {trials: 2, sampler: random}\nparameters:\n" + parameters)
    return path


# MobileNetV3Small's run took 8 minutes on a loaded 2-core machine (the others 1-2 minutes).
@pytest.mark.parametrize("name", [pytest.param(n, marks=(pytest.mark.slow,) if n == "mobilenet"
                                               else ()) for n in CASES
                                  if n != "gru_tf_data"])
def test_run_reaches_complete_trials(workdir: Path, name: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_file(workdir, name)
    code = main(["run", str(path), "--backend", "inprocess"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    study = optuna.load_study(study_name=name,
                              storage=journal_storage(workdir / "runs" / name / "study.log"))
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2, [
        (t.state, t.user_attrs.get("fail_reason"), t.user_attrs.get("message"))
        for t in study.trials]
    engines = {t.user_attrs.get("engine") for t in study.trials}
    assert engines and all(isinstance(e, str) and e for e in engines), engines
    # What trained it and how long a trial took (the note's per-family table reads this).
    print(f"{name}: engines {sorted(engines)}, train_s "
          f"{[t.user_attrs.get('train_s') for t in study.trials]}, build_s "
          f"{[t.user_attrs.get('build_s') for t in study.trials]}")


def test_a_short_ensemble_of_a_constructor_argument_model(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_file(workdir, "subclassed")
    code = main(["ensemble", str(path), "--members", "2", "--backend", "inprocess", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    report = json.loads(out.out)
    assert len(report["members"]) == 2


RAY_CASES = ("conv_bn", "transformer", "gru", "keras_hub")


def _completed(folder: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    from clonesweep.orchestrator.study.storage import load_study

    study = load_study(name, f"journal://{folder / 'runs' / name / 'study.log'}")
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2, [
        (t.state, t.user_attrs.get("fail_reason"), t.user_attrs.get("message")) for t in trials]
    return trials


@pytest.mark.integration
@pytest.mark.parametrize("name", RAY_CASES)
def test_run_on_ray_reaches_complete_trials(ray_cluster: str, workdir: Path, name: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_file(workdir, name)
    code = main(["run", str(path)])  # the Ray backend joins the session's cluster
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    trials = _completed(workdir, name)
    engines = {t.user_attrs["engine"] for t in trials}
    assert engines == {"keras"}, engines  # Functional / Embedding models: Keras's fit
    assert all(t.user_attrs["data_kind"] == "arrays" for t in trials)
    assert all(t.user_attrs["worker"].startswith("worker-") for t in trials)
    print(f"ray {name}: engines {sorted(engines)}, train_s "
          f"{[t.user_attrs.get('train_s') for t in trials]}, build_s "
          f"{[t.user_attrs.get('build_s') for t in trials]}")


@pytest.mark.integration
@pytest.mark.parametrize("name", ["conv_bn", "transformer"])
def test_a_short_ensemble_on_ray(ray_cluster: str, workdir: Path, name: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_file(workdir, name)
    code = main(["ensemble", str(path), "--members", "2", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    report = json.loads(out.out)
    assert len(report["members"]) == 2
    print(f"ray ensemble {name}: {json.dumps(report)[:400]}")


def test_run_with_a_tf_data_loader_records_its_kind(workdir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_file(workdir, "gru_tf_data")
    code = main(["run", str(path), "--backend", "inprocess"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    for t in _completed(workdir, "gru_tf_data"):
        assert t.user_attrs["data_kind"] == "tf.data"
        assert t.user_attrs["data_fingerprint"].startswith("spec:")
        assert "not reordered" in t.user_attrs["data_order"]
        assert t.user_attrs["engine"] == "keras"
