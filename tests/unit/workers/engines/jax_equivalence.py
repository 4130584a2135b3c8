"""Fused JAX members against the same members fitted alone: run as ``KERAS_BACKEND=jax python
tests/unit/workers/engines/jax_equivalence.py MODEL MODE...`` (Keras's backend
is fixed per process, and the rest of the suite runs TensorFlow). Prints one JSON line of measured
differences; ``test_jaxfused.py`` asserts on it.

Members: A (lr 1e-3), B and C (lr 0.06, the control pair: same settings, other seeds) and D
(lr 1e-3, weight decay 0.05, Dropout rate 0.4 instead of the model's; for the Transformer
only with the argument ``packed-dropout``, never for ``hub``), all with dropout. ``hub`` is a
keras-hub BertTextClassifier (its own ``fit``, dict inputs) on 250 token sequences.
200 training samples in batches of 32 (a ragged last batch of 8) and 50 validation samples
in batches of 32 (ragged 18), 2 epochs.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from clonesweep.datasets import digits
from clonesweep.examples.shapes import INPUT_SHAPES, digits_shape
from clonesweep.workers.engines.base import TrainData
from clonesweep.workers.engines.jaxfused import FusedMember, FusedPlan, Mode, train_fused_jax
from clonesweep.workers.engines.jaxstate import DROPOUT, member_optimizer
from clonesweep.workers.engines.kerasfit import FitClock, FitPlan, fit_trial
from clonesweep.workers.rebuild import rebuild
from clonesweep.workers.seeding import DATA_ORDER

MEMBERS = (FusedMember(11, 1e-3), FusedMember(12, 0.06), FusedMember(13, 0.06),
           FusedMember(14, 1e-3, weight_decay=0.05, dropout=0.4))
#: Without a per-member Dropout rate: the Transformer's members are bitwise only so (see
#: test_jaxfused.py).
PLAIN = (*MEMBERS[:3], FusedMember(14, 1e-3, weight_decay=0.05))
PLAN = FusedPlan(epochs=2, batch_size=32, validation_batch_size=32,
                 loss="sparse_categorical_crossentropy", metrics=("accuracy",),
                 optimizer="adam")


def model_config(kind: str) -> dict[str, Any]:
    if kind == "hub":  # a keras-hub task model: its own fit, dict inputs
        import keras_hub

        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
            max_sequence_length=8)
        model = keras_hub.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None,
                                                    activation="softmax")
    else:
        model = digits_shape(kind)
    config: dict[str, Any] = keras.saving.serialize_keras_object(model)
    return config


def data(kind: str) -> tuple[Any, ...]:
    if kind == "hub":  # 200 / 50 token sequences; the class is whether the first id > 25
        ids = np.random.default_rng(0).integers(1, 50, (250, 8)).astype("int32")
        x = {"token_ids": ids, "segment_ids": np.zeros_like(ids),
             "padding_mask": np.ones_like(ids)}
        y = (ids[:, 0] > 25).astype("int32")
        return ({k: v[:200] for k, v in x.items()}, y[:200],
                {k: v[200:] for k, v in x.items()}, y[200:])
    x_tr, y_tr, x_va, y_va = digits(limit=250)
    shape = INPUT_SHAPES[kind]
    return (x_tr.reshape(-1, *shape), y_tr, x_va.reshape(-1, *shape), y_va)


def alone(config: dict[str, Any], member: FusedMember, arrays: tuple[Any, ...]) -> tuple[
        Any, dict[str, list[float]]]:
    """The member trained alone with the Keras-fit engine."""
    params = {} if member.dropout is None else {DROPOUT: member.dropout}
    variant = rebuild(config, params, seed=member.seed)
    variant.model.compile(optimizer=member_optimizer(PLAN, member), loss=PLAN.loss,
                          metrics=list(PLAN.metrics))
    history: dict[str, list[float]] = {}

    def hook(epoch: int, logs: dict[str, float]) -> bool:
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        return False

    plan = FitPlan(PLAN.epochs, PLAN.batch_size, PLAN.validation_batch_size,
                   variant.materialized.seeds[DATA_ORDER])
    fit_trial(variant.model, TrainData.of(arrays), plan, hook,  # type: ignore[arg-type]
              FitClock())
    return variant.model, history


def max_diff(a: Any, b: Any) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(_values(a), _values(b), strict=True))


def _values(model: Any) -> list[Any]:
    return [v.numpy() for v in [*model.trainable_variables, *model.non_trainable_variables]
            if v.dtype.startswith("float")]


def main(kind: str, modes: list[str]) -> dict[str, Any]:
    """Each mode's fused members against the same members fitted alone (once)."""
    global MEMBERS
    if kind in ("transformer", "hub") and "packed-dropout" not in modes:
        MEMBERS = PLAIN
    modes = [m for m in modes if m != "packed-dropout"]
    config, arrays = model_config(kind), data(kind)
    t0 = time.perf_counter()
    separate = [alone(config, m, arrays) for m in MEMBERS]  # type: ignore[arg-type]
    out: dict[str, Any] = {"kind": kind, "separate_s": time.perf_counter() - t0}
    for mode in modes:
        t0 = time.perf_counter()
        plan = dataclasses.replace(PLAN, mode=Mode(mode))
        fused = train_fused_jax(config, MEMBERS, arrays, plan)  # type: ignore[arg-type]
        out[mode] = compare(fused, separate, time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as folder:  # the trained members save as .keras
        path = Path(folder) / "member.keras"
        fused.models[0].save(path)
        out["saved"] = max_diff(keras.saving.load_model(path), fused.models[0])
    return out


def compare(fused: Any, separate: list[Any], seconds: float) -> dict[str, Any]:
    pairs = list(zip(fused.models, fused.histories, separate, strict=True))
    return {
        "weights": [max_diff(f, s) for f, _, (s, _) in pairs],
        "logs": [max(abs(a - b) for key in h for a, b in zip(fh[key], h[key], strict=True))
                 for _, fh, (_, h) in pairs],
        "same_keys": all(set(fh) == set(h) for _, fh, (_, h) in pairs),
        "control": max_diff(fused.models[1], separate[2][0]),
        "fused_s": seconds, "history": fused.histories[1]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
