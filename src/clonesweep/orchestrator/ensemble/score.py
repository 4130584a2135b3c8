"""Scoring an ensemble on the validation data, in numpy on the driver (no Keras).

The ensemble's prediction is the mean of its members' predictions: the mean of member
probabilities for classification losses, the mean prediction for regression. Members and the
ensemble are scored by the same functions, which follow Keras's own formulas (probabilities
renormalized and clipped to ``[1e-7, 1 - 1e-7]`` before the log, as Keras's cross-entropies
do), so a member's score here matches its Keras ``val_*`` metrics to float32 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MetricRow", "score", "score_outputs", "summarize"]

_MSE = frozenset({"mse", "mean_squared_error", "MeanSquaredError"})
_MAE = frozenset({"mae", "mean_absolute_error", "MeanAbsoluteError"})
_EPS = 1e-7


def score(loss: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """``val_loss`` and ``val_accuracy`` (classification) or ``val_mse``/``val_mae``
    (regression, plus ``val_loss`` when the loss is one of them) of predictions ``pred``.

    Example:
        >>> score("sparse_categorical_crossentropy", np.array([1]), np.array([[0.2, 0.8]]))
        {'val_loss': 0.2231435..., 'val_accuracy': 1.0}
    """
    y, p = np.asarray(y), np.asarray(pred, dtype=np.float64)
    n = len(p)
    if loss == "sparse_categorical_crossentropy":
        labels = y.reshape(n).astype(np.int64)
        p = p.reshape(n, -1)
        p = np.clip(p / p.sum(axis=-1, keepdims=True), _EPS, 1 - _EPS)
        return {"val_loss": float(-np.mean(np.log(p[np.arange(n), labels]))),
                "val_accuracy": float(np.mean(np.argmax(p, axis=-1) == labels))}
    if loss == "categorical_crossentropy":
        onehot = y.reshape(n, -1).astype(np.float64)
        p = p.reshape(n, -1)
        p = np.clip(p / p.sum(axis=-1, keepdims=True), _EPS, 1 - _EPS)
        return {"val_loss": float(-np.mean(np.sum(onehot * np.log(p), axis=-1))),
                "val_accuracy": float(np.mean(np.argmax(p, -1) == np.argmax(onehot, -1)))}
    if loss == "binary_crossentropy":
        target = y.reshape(n, -1).astype(np.float64)
        q = np.clip(p.reshape(n, -1), _EPS, 1 - _EPS)
        bce = -(target * np.log(q) + (1 - target) * np.log(1 - q))
        return {"val_loss": float(np.mean(bce)),
                "val_accuracy": float(np.mean((p.reshape(n, -1) > 0.5) == (target > 0.5)))}
    err = p.reshape(n, -1) - y.reshape(n, -1).astype(np.float64)
    out = {"val_mse": float(np.mean(err ** 2)), "val_mae": float(np.mean(np.abs(err)))}
    if loss in _MSE:
        out["val_loss"] = out["val_mse"]
    elif loss in _MAE:
        out["val_loss"] = out["val_mae"]
    return out


@dataclass(frozen=True)
class MetricRow:
    """One metric of the ensemble table. ``std`` is the sample std (ddof=1) over members."""

    metric: str
    ensemble: float
    mean: float
    std: float
    min: float
    max: float


def summarize(loss: str, y: Any, member_preds: Sequence[Any]
              ) -> tuple[dict[str, float], list[dict[str, float]], list[MetricRow]]:
    """Score every member and the ensemble (mean prediction); returns
    ``(ensemble scores, member scores, table rows)``.

    A model of several outputs (``y`` and each prediction a dict, or a list, of arrays) is
    scored output by output with ``loss``, as Keras names its metrics: ``val_<output>_loss``,
    ``val_<output>_accuracy`` (``<output>`` the dict key, or ``output_<i>`` for a list), and
    ``val_loss`` the sum of the outputs' losses; the ensemble averages each output.

    Example:
        >>> y = {"a": np.array([1]), "b": np.array([0])}
        >>> p = {"a": np.array([[0.2, 0.8]]), "b": np.array([[0.6, 0.4]])}
        >>> summarize("sparse_categorical_crossentropy", y, [p])[0]["val_b_accuracy"]
        1.0
    """
    members = [score_outputs(loss, y, p) for p in member_preds]
    ensemble = score_outputs(loss, y, _mean(member_preds))
    return ensemble, members, _rows(ensemble, members)


def score_outputs(loss: str, y: Any, pred: Any) -> dict[str, float]:
    """:func:`score` of one output, or of each output of a model of several."""
    if not isinstance(y, (dict, list, tuple)):
        return score(loss, y, pred)
    keys = list(y) if isinstance(y, dict) else list(range(len(y)))
    out: dict[str, float] = {}
    total: float | None = 0.0
    for key in keys:
        name = key if isinstance(y, dict) else f"output_{key}"
        scores = score(loss, y[key], pred[key])
        for metric, value in scores.items():
            out[f"val_{name}_{metric.removeprefix('val_')}"] = value
        total = None if total is None or "val_loss" not in scores else \
            total + scores["val_loss"]
    if total is not None:
        out = {"val_loss": total, **out}
    return out


def _mean(preds: Sequence[Any]) -> Any:
    """The members' mean prediction, output by output."""
    first = preds[0]
    if isinstance(first, dict):
        return {k: _mean([p[k] for p in preds]) for k in first}
    if isinstance(first, (list, tuple)):
        return [_mean([p[i] for p in preds]) for i in range(len(first))]
    return np.mean(np.stack([np.asarray(p, np.float64) for p in preds]), axis=0)


def _rows(ensemble: Mapping[str, float], members: Sequence[Mapping[str, float]]
          ) -> list[MetricRow]:
    rows = []
    for key, value in ensemble.items():
        vals = np.array([m[key] for m in members])
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        rows.append(MetricRow(key, value, float(np.mean(vals)), std if math.isfinite(std)
                              else 0.0, float(np.min(vals)), float(np.max(vals))))
    return rows
