"""Data beyond arrays: a loader returning a pair of tf.data datasets (batched or not, with or
without sample weights), of keras.utils.PyDatasets, or images read from a folder tree
(``keras.utils.image_dataset_from_directory``). Such trials train on Keras's fit (the
traced-graph engine declines them, saying why), record their data kind, and fingerprint the
datasets' structure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import (
    DataKind,
    FailReason,
    FallbackReason,
    TrialResult,
    TrialSpec,
    TrialState,
)
from clonesweep.workers.runner import TrialRunner, WorkerJob

N, N_VAL = 64, 32


class Quiet:
    def report(self, step: int, value: float) -> bool:
        return False


def _arrays() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N + N_VAL, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    return x[:N], y[:N], x[N:], y[N:]


def tf_pair(batch: int = 0, weights: bool = False) -> tuple[Any, Any]:
    """Two tf.data datasets of (x, y) or (x, y, w) elements; batched by ``batch`` if > 0."""
    x, y, xv, yv = _arrays()
    train = (x, y, np.where(y == 0, 3.0, 1.0).astype(np.float32)) if weights else (x, y)
    pair = [tf.data.Dataset.from_tensor_slices(train),
            tf.data.Dataset.from_tensor_slices((xv, yv))]
    return tuple(ds.batch(batch) if batch else ds for ds in pair)  # type: ignore[return-value]


class Batches(keras.utils.PyDataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, batch: int) -> None:
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        part = slice(i * self.batch, (i + 1) * self.batch)
        return self.x[part], self.y[part]


def py_pair() -> tuple[Batches, Batches]:
    x, y, xv, yv = _arrays()
    return Batches(x, y, 16), Batches(xv, yv, 16)


def mixed() -> tuple[Any, np.ndarray]:
    return tf_pair()[0], _arrays()[2]


def images(directory: str) -> tuple[Any, Any]:
    """A loader reading a folder tree of PNGs (one folder per class)."""
    common = {"image_size": (8, 8), "batch_size": 4, "seed": 3, "validation_split": 0.25}
    return (keras.utils.image_dataset_from_directory(directory, subset="training", **common),
            keras.utils.image_dataset_from_directory(directory, subset="validation", **common))


def _png_tree(root: Path, per_class: int = 8) -> Path:
    rng = np.random.default_rng(1)
    for label, level in (("dark", 40), ("light", 200)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(level, 20, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            (root / label / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


def _mlp(shape: tuple[int, ...] = (6,)) -> str:
    # Named layers: Keras names an unnamed layer after those the process made before
    # ("dropout_1" after another model's "dropout"), and a trial's seeds derive from its
    # layers' names, so the config, and with it the trial, would depend on earlier tests.
    model = keras.Sequential([
        keras.Input(shape), keras.layers.Flatten(name="flat"),
        keras.layers.Rescaling(1.0, name="scale"),
        keras.layers.Dense(8, activation="relu", name="hidden"),
        keras.layers.Dropout(0.1, name="drop"),
        keras.layers.Dense(2, activation="softmax", name="out")], name="tiny")
    return json.dumps(keras.saving.serialize_keras_object(model))


def runner(loader: str, kwargs: dict[str, Any] | None = None, config: str | None = None,
           **training: Any) -> TrialRunner:
    settings = {"epochs": 2, "batch_size": 16, "validation_batch_size": 8,
                "optimizer_config": {"learning_rate": 0.01}, **training}
    return TrialRunner(WorkerJob(
        base_config_json=config or _mlp(), imports=(),
        data=DataSpec(f"{__name__}:{loader}", kwargs or {}),
        training=TrainingSpec(**settings), objective=ObjectiveSpec(metric="val_accuracy"),
        keep_best=False))


def run(r: TrialRunner, seed: int = 1) -> TrialResult:
    result = r.run(TrialSpec(0, {}, seed=seed), Quiet())
    assert result.state is TrialState.COMPLETE, result.message
    return result


def test_unbatched_tf_data_is_batched_by_batch_size_on_keras_fit() -> None:
    unbatched = run(runner("tf_pair"))
    assert unbatched.engine == "keras" and unbatched.engine_fallback is not None
    assert unbatched.engine_fallback.reason is FallbackReason.NOT_COVERED
    assert "tf.data datasets" in unbatched.engine_fallback.detail
    assert unbatched.data_kind is DataKind.TF_DATA
    assert unbatched.data_fingerprint.startswith("spec:")
    # The same data batched by 16 in the loader: the same arithmetic (batch_size 16).
    by_16 = run(runner("tf_pair", {"batch": 16}))
    assert by_16.history["loss"] == unbatched.history["loss"]
    by_8 = run(runner("tf_pair", {"batch": 8}))  # a batched dataset keeps its batches
    assert by_8.history["loss"] != unbatched.history["loss"]
    assert by_8.data_fingerprint != unbatched.data_fingerprint  # another element spec
    assert run(runner("tf_pair")).history == unbatched.history  # same seed, same trial


def test_tf_data_sample_weights_reach_the_loss() -> None:
    plain = run(runner("tf_pair", {"batch": 16}))
    weighted = run(runner("tf_pair", {"batch": 16, "weights": True}))
    assert weighted.history["loss"] != plain.history["loss"]
    assert weighted.data_fingerprint != plain.data_fingerprint


def test_py_datasets_train_in_their_own_batches() -> None:
    result = run(runner("py_pair"))
    assert result.data_kind is DataKind.PY_DATASET and result.engine == "keras"
    assert result.data_fingerprint.startswith("spec:")
    assert len(result.history["val_accuracy"]) == 2


def test_images_read_from_a_folder_tree(tmp_path: Path) -> None:
    root = _png_tree(tmp_path / "pngs")
    result = run(runner("images", {"directory": str(root)}, config=_mlp((8, 8, 3)),
                        epochs=3, optimizer_config={"learning_rate": 0.001}))
    assert result.data_kind is DataKind.TF_DATA
    assert len(result.history["loss"]) == 3


def test_a_dataset_with_an_array_fails_as_user_error() -> None:
    result = runner("mixed").run(TrialSpec(0, {}, seed=1), Quiet())
    assert result.state is TrialState.FAIL and result.reason is FailReason.USER_ERROR
    assert "pair (train, val) of datasets" in result.message and "ndarray" in result.message


@pytest.mark.parametrize("loader", ["tf_pair", "py_pair"])
def test_an_ensemble_member_keeps_predictions_and_targets_of_a_dataset(loader: str) -> None:
    r = TrialRunner(WorkerJob(
        base_config_json=_mlp(), imports=(), data=DataSpec(f"{__name__}:{loader}", {}),
        training=TrainingSpec(epochs=1, batch_size=16, validation_batch_size=8),
        objective=ObjectiveSpec(metric="val_accuracy"), keep_best=False, keep_members=True,
        measure_latency=True))
    result = run(r)
    assert result.inference_latency_ms is not None
    kept = r.member_output(0)
    assert kept is not None
    assert kept.val_pred.shape == (N_VAL, 2)
    np.testing.assert_array_equal(kept.y_val, _arrays()[3])


def two_inputs() -> tuple[Any, ...]:
    """Arrays for a model of two inputs: x as a list [first 4 features, last 2]."""
    x, y, xv, yv = _arrays()
    return [x[:, :4], x[:, 4:]], y, [xv[:, :4], xv[:, 4:]], yv


def test_an_ensemble_member_of_a_two_input_model_keeps_its_predictions() -> None:
    # A list of input arrays was taken for one array of 2 samples (ValueError, every member).
    a, b = keras.Input((4,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(4)(a), b])
    model = keras.Model([a, b], keras.layers.Dense(2, activation="softmax")(h))
    config = json.dumps(keras.saving.serialize_keras_object(model))
    r = TrialRunner(WorkerJob(
        base_config_json=config, imports=(), data=DataSpec(f"{__name__}:two_inputs", {}),
        training=TrainingSpec(epochs=1, batch_size=16, validation_batch_size=12),
        objective=ObjectiveSpec(metric="val_accuracy"), keep_best=False, keep_members=True))
    result = run(r)
    kept = r.member_output(0)
    assert kept is not None and kept.val_pred.shape == (N_VAL, 2)
    np.testing.assert_array_equal(kept.y_val, _arrays()[3])
    # The kept predictions give the member's own validation accuracy.
    accuracy = float(np.mean(kept.val_pred.argmax(axis=1) == kept.y_val))
    assert accuracy == pytest.approx(result.value, abs=1e-6)


def failing() -> None:
    raise RuntimeError("no data here")


def test_the_driver_shares_arrays_and_leaves_datasets_to_each_worker() -> None:
    from clonesweep.workers.given import shared_arrays

    loaded = shared_arrays(DataSpec(f"{__name__}:_arrays", {}))
    assert loaded is not None and len(loaded) == 4
    np.testing.assert_array_equal(loaded[0], _arrays()[0])
    assert shared_arrays(DataSpec(f"{__name__}:tf_pair", {})) is None  # datasets: per worker
    assert shared_arrays(DataSpec(f"{__name__}:py_pair", {})) is None
    # A loader failing on the driver is left to the workers, which fail trials as user_error.
    assert shared_arrays(DataSpec(f"{__name__}:failing", {})) is None
    assert shared_arrays(DataSpec(f"{__name__}:mixed", {})) is None


def test_a_fused_group_of_dataset_members_trains_them_one_by_one() -> None:
    from clonesweep.workers.member import FusedGroup

    r = TrialRunner(WorkerJob(
        base_config_json=_mlp(), imports=(), data=DataSpec(f"{__name__}:tf_pair", {}),
        training=TrainingSpec(epochs=1, batch_size=16, validation_batch_size=8),
        objective=ObjectiveSpec(metric="val_accuracy"), keep_best=False, keep_members=True))
    group = FusedGroup(0, (TrialSpec(0, {}, seed=1), TrialSpec(1, {}, seed=2)))
    result = r.run_fused(group)
    assert result.state is TrialState.COMPLETE, result.message
    assert result.engine_fallback is not None
    assert "tf.data datasets" in result.engine_fallback.detail
    for number in (0, 1):
        kept = r.member_output(number)
        assert kept is not None and kept.result is not None
        assert kept.result.state is TrialState.COMPLETE and kept.val_pred.shape == (N_VAL, 2)
