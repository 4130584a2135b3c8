"""What the traced-graph engines cover: a model's :class:`Structure` (what a traced graph is
specific to) and, for anything else, why not (:func:`graph_declines`, :func:`reuse_blocker`).

Shared by :mod:`~clonesweep.workers.engines.graphfit` (one trial at a time) and
:mod:`~clonesweep.workers.engines.fusedgraph` (stacked members). Imports Keras: import this
module only on a worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import keras
import numpy as np

from clonesweep.spec.model import TrainingSpec
from clonesweep.trials import EngineFallback, FallbackReason
from clonesweep.workers import _keras
from clonesweep.workers.engines.base import TrainData
from clonesweep.workers.streams import StreamData

__all__ = ["Structure", "activation_name", "graph_declines", "reuse_blocker", "structure_of"]

_LAYERS = ("InputLayer", "Dense", "Dropout", "Activation", "Flatten")
_OPTIMIZER_OFF = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm",
                  "loss_scale_factor", "gradient_accumulation_steps")
_SPARSE_LOSSES = ("sparse_categorical_crossentropy",)
#: With a one-unit output, 1-D targets are covered for this loss and these metrics.
ONE_D_LOSSES = ("binary_crossentropy",)
ONE_D_METRICS = ("accuracy", "acc", "binary_accuracy")


class Structure(NamedTuple):
    """What a traced graph is specific to; trials that share it share the graph."""

    layers: tuple[tuple[Any, ...], ...]
    input_rank: int
    x_dtype: str
    y_dtype: str
    y_rank: int
    outputs: int
    loss: str
    metrics: tuple[str, ...]
    optimizer: tuple[Any, ...]


def activation_name(fn: Any) -> str | None:
    """The name of a built-in Keras activation function, else None."""
    module = getattr(fn, "__module__", "") or ""
    if not module.startswith("keras.") or not callable(fn):
        return None
    name = getattr(fn, "__name__", None)
    return name if name and keras.activations.get(name) is fn else None


def graph_declines(model: keras.Model, data: TrainData | StreamData, training: TrainingSpec,
                   engine: str,
                   optimizer: keras.optimizers.Optimizer | None = None,
                   has_callbacks: bool = False,
                   one_d_targets: bool = False) -> EngineFallback | None:
    """:func:`reuse_blocker` as a typed fallback (which kind of reason, and its words)."""
    if isinstance(data, StreamData):
        return EngineFallback(engine, FallbackReason.NOT_COVERED,
                              f"the data are {data.kind.value} datasets (this engine takes "
                              "arrays only)")
    if keras.backend.backend() != "tensorflow":
        return EngineFallback(engine, FallbackReason.BACKEND,
                              f"the Keras backend is {keras.backend.backend()}")
    if _keras.keras_release() not in _keras.VERIFIED_KERAS:
        return EngineFallback(engine, FallbackReason.UNVERIFIED_VERSION,
                              f"Keras {keras.__version__} is not among the releases this "
                              f"engine was checked against "
                              f"({', '.join(_keras.VERIFIED_KERAS)})")
    if has_callbacks:
        return EngineFallback(engine, FallbackReason.NOT_COVERED,
                              "training.callbacks are set (they need Keras's fit)")
    if training.class_weight is not None:
        return EngineFallback(engine, FallbackReason.NOT_COVERED, "training.class_weight is set")
    if data.weighted:
        return EngineFallback(engine, FallbackReason.NOT_COVERED,
                              "the data loader returns sample weights")
    why = reuse_blocker(model, data, training.loss, training.metrics,
                        training.jit_for("tensorflow"),
                        optimizer=optimizer, one_d_targets=one_d_targets)
    return None if why is None else EngineFallback(engine, FallbackReason.NOT_COVERED, why)


def reuse_blocker(model: keras.Model, data: TrainData, loss: str, metrics: Sequence[str],
                  jit_compile: bool,
                  optimizer: keras.optimizers.Optimizer | None = None,
                  one_d_targets: bool = False) -> str | None:
    """Why this compiled model's trials cannot share a traced graph, or None when they can.
    ``optimizer``: the one to train with, when the model itself is not compiled.
    ``one_d_targets``: targets of shape ``(n,)`` for outputs of shape ``(n, 1)`` are covered
    (the single-trial engine: Keras's own loss and metric objects reshape them as in
    ``fit``; the stacked engine's loss function does not)."""
    if keras.backend.backend() != "tensorflow":
        return f"the Keras backend is {keras.backend.backend()}"
    if _keras.keras_release() not in _keras.VERIFIED_KERAS:
        return (f"Keras {keras.__version__} is not among the releases checked "
                f"({', '.join(_keras.VERIFIED_KERAS)})")
    if not _keras.has_compile_utils():
        return "this Keras has no keras.src.trainers.compile_utils"
    if jit_compile:
        return "jit_compile is on"
    if type(model) is not keras.Sequential:
        return f"the model is a {type(model).__name__}, not a Sequential"
    if not all(isinstance(a, np.ndarray) for a in (data.x, data.y, data.x_val, data.y_val)):
        return "the data are not four NumPy arrays"
    if not isinstance(loss, str) or not all(isinstance(m, str) for m in metrics):
        return "the loss or a metric is not given by name"
    if model.dtype_policy.name != "float32":
        return f"the dtype policy is {model.dtype_policy.name}"
    out_shape = tuple(model.outputs[0].shape)
    # Checked bitwise against fit for this loss and these metrics only (tests/unit/workers/
    # engines/test_graphfit_bitwise.py); Keras reshapes 1-D targets differently for others
    # (mse squeezes the output instead).
    one_d = (one_d_targets and data.y.ndim == 1 and len(out_shape) == 2 and out_shape[1] == 1
             and loss in ONE_D_LOSSES and set(metrics) <= set(ONE_D_METRICS))
    if data.y.ndim != len(out_shape) and loss not in _SPARSE_LOSSES and not one_d:
        return (f"the targets have rank {data.y.ndim} and the output rank "
                f"{len(model.outputs[0].shape)} (Keras's fit reshapes them)")
    for layer in model.layers:
        why = _layer_blocker(layer)
        if why is not None:
            return why
    if model.losses:
        return "the model adds losses of its own"
    return _optimizer_blocker(optimizer if optimizer is not None else model.optimizer)


def _layer_blocker(layer: keras.layers.Layer) -> str | None:
    cls = type(layer).__name__
    if cls not in _LAYERS or type(layer) is not getattr(keras.layers, cls):
        return f"layer '{layer.name}' is a {cls}"
    if layer.dtype_policy.name != "float32":
        return f"layer '{layer.name}' computes in {layer.dtype_policy.name}"
    if not layer.trainable and layer.weights:
        return f"layer '{layer.name}' is frozen (trainable: false)"
    if cls == "Dense":
        for attr in ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                     "kernel_constraint", "bias_constraint"):
            if getattr(layer, attr, None) is not None:
                return f"Dense layer '{layer.name}' has a {attr}"
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            return f"Dense layer '{layer.name}' is LoRA-enabled or quantized"
        if len(layer.input.shape) != 2:
            return f"Dense layer '{layer.name}' sees an input of rank above 2"
    if cls in ("Dense", "Activation") and activation_name(layer.activation) is None:
        return f"layer '{layer.name}' has a custom activation"
    if cls == "Dropout" and layer.noise_shape is not None:
        return f"Dropout layer '{layer.name}' has a noise_shape"
    if cls == "Flatten" and layer.data_format == "channels_first":
        return f"Flatten layer '{layer.name}' is channels_first"
    return None


def _optimizer_blocker(opt: keras.optimizers.Optimizer) -> str | None:
    kind = type(opt)
    if kind not in (keras.optimizers.Adam, keras.optimizers.SGD):
        return f"the optimizer is {kind.__name__} (covered: Adam, SGD)"
    if _keras.constant_learning_rate(opt) is None:
        return "the learning rate is a schedule or a callable"
    for attr in _OPTIMIZER_OFF:
        if getattr(opt, attr, None) is not None:
            return f"the optimizer sets {attr}"
    if opt.use_ema:
        return "the optimizer uses EMA"
    if kind is keras.optimizers.Adam and opt.amsgrad:
        return "Adam's amsgrad is on"
    return None


def structure_of(model: keras.Model, data: TrainData, loss: str, metrics: Sequence[str],
                 optimizer: keras.optimizers.Optimizer | None = None) -> Structure:
    """The :class:`Structure` of a model :func:`reuse_blocker` accepts (trained with
    ``optimizer``, or the one it was compiled with)."""
    layers: list[tuple[Any, ...]] = []
    for layer in model.layers:
        cls = type(layer).__name__
        if cls == "Dense":
            # One unit adds its bias as a plain add (see GraphEngine._forward): its own trace.
            layers.append((cls, activation_name(layer.activation), layer.use_bias,
                           layer.units == 1))
        elif cls == "Activation":
            layers.append((cls, activation_name(layer.activation)))
        elif cls == "Dropout":
            layers.append((cls, layer.rate > 0))
        elif cls == "Flatten":
            layers.append((cls,))
    opt = optimizer if optimizer is not None else model.optimizer
    if type(opt) is keras.optimizers.SGD:
        kind: tuple[Any, ...] = ("SGD", opt.momentum != 0, bool(opt.nesterov))
    else:
        kind = ("Adam",)
    x_tr, y_tr = data.x, data.y
    return Structure(tuple(layers), x_tr.ndim, str(x_tr.dtype), str(y_tr.dtype), y_tr.ndim,
                     int(model.outputs[0].shape[-1]), loss, tuple(metrics), kind)
