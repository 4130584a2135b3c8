"""Every Keras and TensorFlow internal the workers rely on, in one place.

The traced engines (:mod:`clonesweep.workers.engines.graphfit`, ``fusedgraph``) reproduce
Keras's own arithmetic op for op; for that they read a few things Keras does not publish.
Each use below says what the public way is and why it is not enough, and
``tests/unit/workers/test__keras.py`` calls each one on real objects, so that a Keras or
TensorFlow release that moves one fails there, by name, instead of failing trials. A release
the graph engine was not checked against (:data:`VERIFIED_KERAS`) is not used by it at all:
its trials train on Keras's fit and say so (``engine_fallback: graph: unverified_version``).

Where a public way costs little it is taken instead (the learning rate: ``optimizer.
learning_rate`` is the optimizer's variable unless it is a schedule or a callable).

Imports Keras: import this module only on a worker, after the backend is configured.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import keras

__all__ = [
    "VERIFIED_KERAS",
    "adam_slots",
    "cast_seed",
    "compiled_loss_and_metrics",
    "condensed_deserialization_error",
    "constant_learning_rate",
    "dropout_seed_state",
    "has_compile_utils",
    "keras_release",
    "memory_exhausted",
    "safe_mode_refused",
    "sgd_slots",
    "unknown_classes",
    "without_grappler",
]

#: Keras releases (major.minor) whose ops the graph engine was checked against, bitwise
#: where tests/unit/workers/engines/test_graphfit.py says so. On another release the graph
#: engine hands every trial to Keras's fit, saying so on the trial, until it is checked.
VERIFIED_KERAS = ("3.15",)


def keras_release() -> str:
    """The installed Keras's ``major.minor``."""
    return ".".join(keras.__version__.split(".")[:2])


def compiled_loss_and_metrics(loss: str, metrics: tuple[str, ...], y_true: Any,
                              y_pred: Any) -> tuple[Any, list[Any]]:
    """The loss object and metric objects ``model.compile`` resolves from these names.

    Private: ``keras.src.trainers.compile_utils.get_loss`` / ``get_metric``. The public
    ``keras.losses.get`` returns the bare function, without the reduction wrapper that
    ``compile`` puts around it, and ``keras.metrics.get("accuracy")`` returns the generic
    accuracy, where ``compile`` picks the sparse, categorical or binary one from the shapes
    of the targets and outputs: the traced engine must compute exactly what ``fit`` computes.
    ``model.compute_loss`` is public but bound to one model, while the engine's graph serves
    every trial of a layer structure.

    Raises:
        ImportError: this Keras has no such module (the engine then falls back).
    """
    from keras.src.trainers.compile_utils import get_loss, get_metric

    return get_loss(loss, y_true, y_pred), [get_metric(m, y_true, y_pred) for m in metrics]


def has_compile_utils() -> bool:
    """Whether :func:`compiled_loss_and_metrics` can work on this Keras."""
    try:
        from keras.src.trainers import compile_utils
    except ImportError:
        return False
    return all(hasattr(compile_utils, f) for f in ("get_loss", "get_metric"))


def constant_learning_rate(optimizer: keras.optimizers.Optimizer) -> keras.Variable | None:
    """The optimizer's learning-rate variable, or None for a schedule or a callable.

    Public: ``optimizer.learning_rate`` returns that variable itself when the rate is a
    constant (a schedule gives a tensor computed from the step count instead).
    """
    rate = optimizer.learning_rate
    return rate if isinstance(rate, keras.Variable) else None


def adam_slots(optimizer: keras.optimizers.Optimizer) -> list[list[Any]]:
    """Adam's first and second moment variables, each in the order of the trained variables.

    Private: ``Adam._momentums`` / ``_velocities``. The public ``optimizer.variables`` holds
    them too, but interleaved after the step count and the learning rate in an order Keras
    does not document; matching them by variable path would depend on Keras's naming, which
    is less stable than these two attributes.
    """
    return [list(optimizer._momentums), list(optimizer._velocities)]


def sgd_slots(optimizer: keras.optimizers.Optimizer) -> list[list[Any]]:
    """SGD's momentum variables (empty without momentum). Public attribute, no private use:
    kept here beside Adam's for symmetry."""
    return [list(optimizer.momentums)] if optimizer.momentum else []


def dropout_seed_state(layer: keras.layers.Layer) -> keras.Variable:
    """The variable holding a Dropout layer's random state (int64, shape (2,)).

    Undocumented: ``Dropout.seed_generator`` and ``SeedGenerator.state`` are public names
    but not documented API. No public way reads or sets the state a layer's next mask is
    drawn from, which the engines need so that a trial's Dropout masks are those its own
    layer would draw in ``fit``.
    """
    return layer.seed_generator.state


def cast_seed(seed: Any) -> Any:
    """A generator's int64 state as the int32 seed TensorFlow's stateless ops take.

    Replicates Keras's TensorFlow backend (``keras.src.backend.tensorflow.random.
    _cast_seed``, private): ``keras.random.dropout`` is public but draws from a
    ``SeedGenerator`` object, while the traced engines keep every trial's (or member's)
    state in a variable of their own graph. The test compares a draw made this way with
    ``keras.random.dropout``'s, bitwise.
    """
    import tensorflow as tf

    if seed.dtype == tf.int32:
        return seed
    return tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)


@contextlib.contextmanager
def without_grappler() -> Iterator[None]:
    """Run the calls made inside this block without TensorFlow's graph optimizer (Grappler).

    TensorFlow's only switch (``tf.config.optimizer.set_experimental_options``, public but
    experimental) is process-wide: every graph run on this process meanwhile runs without it.
    The worker runs one trial at a time, so only the fused engine's calls fall inside; the
    previous setting is restored on exit. Its passes cost more than they save on the stacked
    members' small graphs (bench/README.md), and their rewrites change the last bits of some
    losses: used only where results agree to float32 rounding anyway (fused members).
    """
    import tensorflow as tf

    key = "disable_meta_optimizer"
    before = tf.config.optimizer.get_experimental_options().get(key, False)
    tf.config.optimizer.set_experimental_options({key: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({key: before})


# -- error text: what Keras and its backends say, where no exception type says it ----------
# Keras raises TypeError/ValueError for a refused or unknown class alike, and the backends'
# out-of-memory errors carry the device in their text only. Each match below is exercised on
# a real error (or the documented message format) in tests/unit/workers/test__keras.py.

_UNKNOWN_CLASS = re.compile(r"Could not locate (?:class|function) '([^']+)'")
_NESTED = "Exception encountered: "


def safe_mode_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is Keras's safe-mode refusal (a Lambda layer, a lambda in a config).

    Public way: none; ``deserialize_keras_object(safe_mode=True)`` raises a plain ValueError
    whose text names ``safe_mode``.
    """
    text = str(exc)
    return "safe_mode" in text or "safe mode" in text


def unknown_classes(exc: BaseException) -> list[str]:
    """The class or function names Keras could not locate in ``exc``'s text (sorted, once
    each): an unregistered custom layer. Public way: none (a TypeError naming them)."""
    return sorted(set(_UNKNOWN_CLASS.findall(str(exc))))


def condensed_deserialization_error(message: str) -> str:
    """A deserialization error without the config of every enclosing object that Keras
    nests in it: the message's head and its innermost cause, without Keras's advice to turn
    safe mode off (validate names the key and value instead)."""
    if _NESTED not in message:
        return message
    head = re.sub(r"\s*\w+Error:\s*$", "", message.split("<class", 1)[0]).rstrip(" :")
    cause = message.rsplit(_NESTED, 1)[1].strip()
    sentences = re.split(r"(?<=\.)\s+", cause)
    cause = " ".join(s for s in sentences
                     if "safe_mode=False" not in s and "unsafe_deserialization" not in s)
    return f"{head}: {cause}"


def memory_exhausted(exc: BaseException) -> str | None:
    """``"host"``, ``"device"`` (an accelerator), or None when ``exc`` is not out of memory.

    TensorFlow raises ``ResourceExhaustedError``, XLA (JAX) an error whose text starts
    ``RESOURCE_EXHAUSTED`` (often naming no device), PyTorch ``OutOfMemoryError`` ("CUDA out
    of memory"); only a text naming the CPU (``device:CPU``, ``allocator cpu``, ``on CPU``)
    makes one of them the host's. Matched by class name: the backends' own classes are not
    importable on every backend. Python's MemoryError is the host's.
    """
    if isinstance(exc, MemoryError):
        return "host"
    name = type(exc).__name__
    if name not in ("ResourceExhaustedError", "OutOfMemoryError") \
            and "RESOURCE_EXHAUSTED" not in str(exc):
        return None
    text = f"{name}: {exc}"
    on_cpu = "device:CPU" in text or "allocator cpu" in text or "on CPU" in text
    return "host" if on_cpu else "device"
