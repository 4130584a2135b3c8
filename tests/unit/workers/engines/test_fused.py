"""Fused training equals separate training, member by member (real Keras, in process).

Tolerance: fused and separate runs do the same float32 arithmetic (same initial weights, same
batches, same dropout masks, same Adam updates) except that a stacked Dense is one ``einsum``
where a member's Dense is one ``matmul``: the two kernels may sum their products in another
order, a difference of a few float32 ulps (~6e-8 at magnitude 1) per step. Adam's update does
not amplify it over a few dozen steps. Measured in this very setup (3 epochs of 8 steps, lr
0.01): at most 1.6e-7 on weights, 1.2e-7 on predicted probabilities; on the digits benchmark
(5 epochs of 23 steps) 6e-8 and identical val accuracy. We allow weights ``atol=1e-5`` (~60x
the observed drift, yet two orders below what one step with another dropout mask or batch
moves a weight: lr 0.01 makes Adam steps of ~1e-2, and the test checks training moved weights
by more than 1e-2), val_loss ``rtol=1e-5``, and val_accuracy exact up to one prediction flip
(an argmax at a near-tie).
"""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest

from clonesweep.orchestrator.ensemble.run import member_seed
from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import TrialSpec, TrialState
from clonesweep.workers.engines.fused import build_fused, extract_members, fusion_blocker
from clonesweep.workers.member import FusedGroup
from clonesweep.workers.rebuild import rebuild
from clonesweep.workers.runner import TrialRunner, WorkerJob
from tests_support import CONFIGS

BASE_JSON = (CONFIGS / "digits_mlp.json").read_text()
BASE = json.loads(BASE_JSON)
PARAMS = {"layers.hidden.units": 16, "layers.drop.rate": 0.3}
K = 3


class NoPruning:
    def report(self, step: int, value: float) -> bool:
        return False


@pytest.fixture(scope="module")
def runner() -> TrialRunner:
    job = WorkerJob(BASE_JSON, (), DataSpec("clonesweep.datasets:digits", {"limit": 300}),
                    TrainingSpec(epochs=3, batch_size=32, optimizer_config={"learning_rate": 0.01}),
                    ObjectiveSpec(), keep_best=False, keep_members=True)
    return TrialRunner(job)


def load(data: bytes, tmp_path: object, name: str) -> keras.Model:
    path = f"{tmp_path}/{name}.keras"
    with open(path, "wb") as fh:
        fh.write(data)
    return keras.saving.load_model(path, safe_mode=True, compile=False)


def test_fused_initial_weights_equal_separate_members_bitwise() -> None:
    members = [rebuild(BASE, PARAMS, seed=member_seed(0, i)).model for i in range(K)]
    fresh = [rebuild(BASE, PARAMS, seed=member_seed(0, i)).model for i in range(K)]
    fused = build_fused(members)
    for name in ("hidden", "out"):
        layer = fused.get_layer(name)
        for i in range(K):
            assert np.array_equal(layer.kernel.numpy()[i], fresh[i].get_layer(name).kernel.numpy())
            assert np.array_equal(layer.bias.numpy()[i], fresh[i].get_layer(name).bias.numpy())
    seeds = [int(m.get_layer("drop").seed) for m in fresh]
    assert [int(g.state.numpy()[0]) for g in fused.get_layer("drop").generators] == seeds


def test_fused_training_matches_separate_training(runner: TrialRunner, tmp_path: object) -> None:
    specs = [TrialSpec(i, PARAMS, member_seed(0, i)) for i in range(K)]
    separate = []
    for spec in specs:
        result = runner.run(spec, NoPruning())
        assert result.state is TrialState.COMPLETE, result.message
        separate.append((result, runner.member_output(spec.number)))
    group = FusedGroup(10, tuple(dataclasses.replace(s, number=10 + s.number) for s in specs))
    done = runner.run_fused(group)
    assert done.state is TrialState.COMPLETE and "fused" in done.message, done.message
    n_val = len(separate[0][1].y_val)
    for i, (result, out) in enumerate(separate):
        fused = runner.member_output(10 + i)
        assert fused is not None and fused.fused and fused.result is not None
        assert fused.result.seeds == result.seeds
        assert fused.result.config_hash == result.config_hash
        np.testing.assert_allclose(fused.result.history["val_loss"], result.history["val_loss"],
                                   rtol=1e-5)
        acc_f, acc_s = fused.result.history["val_accuracy"], result.history["val_accuracy"]
        assert np.max(np.abs(np.subtract(acc_f, acc_s))) <= 1.0 / n_val + 1e-9
        a = load(out.model_bytes, tmp_path, f"sep{i}")
        b = load(fused.model_bytes, tmp_path, f"fused{i}")
        for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_allclose(wb, wa, rtol=0, atol=1e-5)
        np.testing.assert_allclose(fused.val_pred, out.val_pred, atol=1e-5)
    # Training moved the weights far beyond the tolerance: the comparison is not vacuous.
    init = rebuild(BASE, PARAMS, seed=specs[0].seed).model.get_layer("out").kernel.numpy()
    trained = load(separate[0][1].model_bytes, tmp_path, "s0").get_layer("out").kernel.numpy()
    assert np.max(np.abs(trained - init)) > 1e-2


def test_pulled_out_members_predict_as_the_fused_model() -> None:
    members = [rebuild(BASE, PARAMS, seed=member_seed(3, i)).model for i in range(K)]
    fused = build_fused(members)
    fused.compile(optimizer="adam", loss=lambda y, p: keras.ops.sum(
        keras.losses.sparse_categorical_crossentropy(y, p), axis=-1))
    rng = np.random.default_rng(0)
    x = rng.random((64, K, 64), dtype=np.float32)
    y = rng.integers(0, 10, (64, K))
    fused.fit(x, y, batch_size=16, epochs=2, verbose=0)
    x_val = rng.random((20, 64), dtype=np.float32)
    expected = keras.ops.convert_to_numpy(fused(np.repeat(x_val[:, None], K, axis=1),
                                                training=False))
    for i, member in enumerate(extract_members(fused, members)):
        assert isinstance(member, keras.Sequential)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(member(x_val, training=False)),
                                   expected[:, i],
                                   atol=1e-6)


def test_fusion_blocker_names_what_has_no_stacked_form() -> None:
    mat = rebuild(BASE, PARAMS, seed=0).materialized
    assert fusion_blocker(mat.config, {}, "val_accuracy") is None
    assert "global_clipnorm" in str(fusion_blocker(mat.config, {"global_clipnorm": 1.0},
                                                   "val_accuracy"))
    assert "training metric" in str(fusion_blocker(mat.config, {}, "accuracy"))
    bn = json.loads(json.dumps(mat.config))
    bn["config"]["layers"].insert(2, {"module": "keras.layers", "class_name":
                                      "BatchNormalization", "config": {"name": "bn"}})
    assert "BatchNormalization" in str(fusion_blocker(bn, {}, "val_accuracy"))
    functional = dict(mat.config, class_name="Functional")
    assert "Sequential" in str(fusion_blocker(functional, {}, "val_accuracy"))


def test_a_model_without_stacked_form_trains_separately_and_says_so() -> None:
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8, name="hidden"),
                              keras.layers.BatchNormalization(name="bn"),
                              keras.layers.Dense(10, activation="softmax", name="out")])
    job = WorkerJob(json.dumps(keras.saving.serialize_keras_object(model)), (),
                    DataSpec("clonesweep.datasets:digits", {"limit": 200}),
                    TrainingSpec(epochs=1, batch_size=32), ObjectiveSpec(), keep_best=False,
                    keep_members=True)
    runner = TrialRunner(job)
    done = runner.run_fused(FusedGroup(0, (TrialSpec(0, {}, 1), TrialSpec(1, {}, 2))))
    assert done.state is TrialState.COMPLETE
    assert "does not apply" in done.message and "BatchNormalization" in done.message
    for number in (0, 1):
        out = runner.member_output(number)
        assert out is not None and not out.fused and out.result is not None
        assert out.result.state is TrialState.COMPLETE and out.model_bytes[:2] == b"PK"


def test_dropout_masks_decide_the_result_so_the_match_is_not_luck() -> None:
    """Control: the same fused training with the members' dropout generators swapped moves
    the weights far beyond the 1e-5 tolerance, so a match means each member drew its own
    separate Dropout layer's masks."""
    from clonesweep.datasets import digits

    x, y, _, _ = digits(limit=300)
    xk, yk = np.repeat(x[:, None], K, axis=1), np.repeat(y[:, None], K, axis=1)
    kernels = []
    for swap in (False, True):
        members = [rebuild(BASE, PARAMS, seed=member_seed(0, i)).model for i in range(K)]
        fused = build_fused(members)
        if swap:
            gens = fused.get_layer("drop").generators
            states = [g.state.numpy() for g in gens]
            for g, state in zip(gens, states[1:] + states[:1], strict=True):
                g.state.assign(state)
        fused.compile(optimizer=keras.optimizers.Adam(0.01), loss=lambda t, p: keras.ops.sum(
            keras.losses.sparse_categorical_crossentropy(t, p), axis=-1))
        fused.fit(xk, yk, batch_size=32, epochs=1, shuffle=False, verbose=0)
        kernels.append(fused.get_layer("hidden").kernel.numpy())
    assert np.max(np.abs(kernels[0] - kernels[1])) > 1e-3
