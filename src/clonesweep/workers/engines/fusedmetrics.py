"""Fused members' validation metrics, computed from their predictions as Keras computes them
(a fused run predicts all members at once; each member is scored on its own slice).
Imports Keras only inside its functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clonesweep.spec.model import TrainingSpec

__all__ = ["member_metrics", "stacked_metrics"]

_ACCURACY = {"sparse_categorical_crossentropy": "sparse_categorical_accuracy",
             "categorical_crossentropy": "categorical_accuracy",
             "binary_crossentropy": "binary_accuracy"}


def member_metrics(training: TrainingSpec, y: Any, pred: np.ndarray) -> dict[str, float]:
    """``val_loss`` and ``val_<metric>`` of one member's predictions, as Keras computes them."""
    import keras

    def mean(value: Any) -> float:
        return float(np.mean(keras.ops.convert_to_numpy(value)))

    out = {"val_loss": mean(keras.losses.get(training.loss)(y, pred))}
    for name in training.metrics:
        fn_name = _ACCURACY.get(training.loss, "accuracy") if name in ("accuracy", "acc") \
            else name
        fn = keras.metrics.get(fn_name)
        y_true, y_pred = y, pred
        if fn_name == "sparse_categorical_accuracy" and np.ndim(y) == 1:
            y_true = np.asarray(y)[:, None]
        out[f"val_{name}"] = mean(fn(y_true, y_pred))
    return out


def stacked_metrics(training: TrainingSpec, y: Any,
                    preds: np.ndarray) -> list[dict[str, float]]:
    """:func:`member_metrics` of every member at once, equal to it member by member.

    ``preds``: ``(members, n, ...)``. The loss and the accuracies are per-sample functions:
    computed on all members' rows at once, then each member's mean over its own contiguous
    row (for accuracies, 0/1 values, a NumPy mean equals the Keras metric's exactly). Other
    metrics are computed member by member, as :func:`member_metrics` does.
    """
    import keras

    k, n = preds.shape[0], preds.shape[1]
    flat = preds.reshape((k * n, *preds.shape[2:]))
    y_all = np.concatenate([np.asarray(y)] * k)

    def means(values: Any) -> list[float]:
        rows = np.asarray(keras.ops.convert_to_numpy(values)).reshape(k, n)
        return [float(v) for v in np.mean(rows, axis=1)]

    out = {"val_loss": means(keras.losses.get(training.loss)(y_all, flat))}
    for name in training.metrics:
        fn_name = _ACCURACY.get(training.loss, "accuracy") if name in ("accuracy", "acc") \
            else name
        if fn_name in _ACCURACY.values():
            y_true = y_all[:, None] if fn_name == "sparse_categorical_accuracy" and \
                np.ndim(y) == 1 else y_all
            out[f"val_{name}"] = means(getattr(keras.metrics, fn_name)(y_true, flat))
        else:
            out[f"val_{name}"] = [member_metrics(training, y, p)[f"val_{name}"] for p in preds]
    return [{key: values[i] for key, values in out.items()} for i in range(k)]
