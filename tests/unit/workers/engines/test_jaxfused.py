"""Fused JAX members against the same members trained alone with Keras's fit on JAX.

Each case runs jax_equivalence.py (beside this file) in its own process with KERAS_BACKEND=jax
(Keras fixes its backend per process; the rest of the suite runs TensorFlow). Four members
per model: lr 1e-3, two at lr 0.06 (the control pair: same settings, other seeds), and lr
1e-3 with weight decay 0.05 (a packed trial), all with dropout; 2 epochs of 200 digits with
ragged last training and validation batches.

Stated tolerances (max absolute difference over every float variable, BatchNorm statistics
included, after 2 epochs), measured on the 2-core CPU machine:
- MLP, map mode (members one by one inside each compiled step): bitwise (0.0), history too.
  vmap mode: up to 2.4e-7 (XLA's batched matmul sums in another order).
- Transformer (MultiHeadAttention, LayerNormalization, Dropout), vmap mode: bitwise (0.0)
  when the members share the Dropout rate. With a per-member rate (member D at 0.4: the
  template's Dropout becomes RateDropout) every member drifts, vmap and map alike: up to
  5.2e-6 at lr 1e-3 and 4.6e-4 at lr 0.06 (not tested; the cause is not found: the same
  RateDropout is bitwise in the MLP and the CNN's serial mode).
- Per-member Dropout rate (MLP, CNN): as without it (bitwise / the CNN tolerance).
- LSTM with its own input and recurrent dropout, then Dropout, map mode: bitwise (0.0). Before
  the fused validation pass kept its non-trainable state as ``evaluate`` does, members drifted
  by 4e-3 at lr 1e-3 and 0.37 at lr 0.06 (the LSTM draws dropout masks at inference too, so
  fit's second epoch starts from an advanced seed generator).
- Conv2D + BatchNormalization CNN, vmap mode: up to 7e-4 at lr 1e-3 and 4.4e-2 at lr 0.06
  (map mode: 1.9e-4 and 3.9e-2; val accuracy off by up to 2 of 50 samples); serial mode
  (the unbatched step, one call per member): bitwise. So the drift is the convolution's
  gradient computed by another XLA program (a batched/grouped convolution under vmap, a
  loop body under map), not the batch order, dropout streams or BatchNorm statistics,
  which are fit's; Adam (dividing by sqrt(v)) and BatchNorm magnify its last-bit
  differences to 1e-2 at lr 0.06.
The control (member B fused against member C alone: same settings, another seed) is > 1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent

#: The CNN tolerance per learning rate (members A and D: 1e-3; B and C: 0.06): about twice
#: 1.8x the largest difference measured.
CNN_TOLERANCE = (2e-3, 0.08, 0.08, 2e-3)


def _run(kind: str, *modes: str) -> dict[str, Any]:
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (a base dependency)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLA_PYTHON_CLIENT")}
    env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    args = [sys.executable, str(HERE / "jax_equivalence.py"), kind, *modes]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=560)
    assert done.returncode == 0, done.stderr[-4000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["saved"] == 0.0, out
    for mode in modes:
        assert out[mode]["same_keys"], out
        assert set(out[mode]["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert out[mode]["control"] > 0.5, out
    return out


def test_refused_off_the_jax_backend() -> None:
    pytest.importorskip("jax")
    import keras

    from clonesweep.errors import SpecError
    from clonesweep.workers.engines.jaxfused import FusedMember, FusedPlan, train_fused_jax

    if keras.backend.backend() == "jax":
        pytest.skip("this process runs Keras on JAX")
    plan = FusedPlan(epochs=1, batch_size=4, validation_batch_size=4, loss="mse")
    with pytest.raises(SpecError, match="KERAS_BACKEND"):
        train_fused_jax({}, [FusedMember(1)], (None, None, None, None), plan)


@pytest.mark.slow
def test_mlp_members_are_bitwise_those_fitted_alone_in_map_mode() -> None:
    out = _run("mlp", "map", "vmap")
    assert out["map"]["weights"] == [0.0] * 4, out
    assert out["map"]["logs"] == [0.0] * 4, out
    assert max(out["vmap"]["weights"]) <= 1e-6, out


@pytest.mark.slow
def test_transformer_members_are_bitwise_those_fitted_alone() -> None:
    out = _run("transformer", "vmap")
    assert out["vmap"]["weights"] == [0.0] * 4, out
    assert out["vmap"]["logs"] == [0.0] * 4, out


@pytest.mark.slow
def test_recurrent_members_with_their_own_dropouts_are_bitwise_in_map_mode() -> None:
    # An LSTM with input and recurrent dropout draws its masks at inference too: the
    # validation pass advances its seed generator, and fit's next epoch starts from there.
    out = _run("recurrent", "map")
    assert out["map"]["weights"] == [0.0] * 4, out
    assert out["map"]["logs"] == [0.0] * 4, out


@pytest.mark.slow
def test_keras_hub_task_members_with_dict_inputs_are_bitwise_in_map_mode() -> None:
    # keras-hub's task models have a fit of their own that refused the other backends'
    # batches (a PyDataset): every member failed on JAX; dict inputs were declined by the
    # fused engine.
    if importlib.util.find_spec("keras_hub") is None:
        pytest.skip("keras-hub is not installed (pip install clonesweep[hub])")
    out = _run("hub", "map")
    assert out["map"]["weights"] == [0.0] * 4, out
    assert out["map"]["logs"] == [0.0] * 4, out


@pytest.mark.slow
def test_cnn_members_within_tolerance_vmapped_and_bitwise_serial() -> None:
    out = _run("cnn", "vmap", "serial")
    for diff, tolerance in zip(out["vmap"]["weights"], CNN_TOLERANCE, strict=True):
        assert diff <= tolerance, out
    assert out["vmap"]["control"] > 10 * max(CNN_TOLERANCE), out
    assert out["serial"]["weights"] == [0.0] * 4, out
    assert out["serial"]["logs"] == [0.0] * 4, out
