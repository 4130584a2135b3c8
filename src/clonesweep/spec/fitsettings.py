"""``training.class_weight`` and ``training.callbacks``: what the sweep file passes to Keras's
``fit`` beyond epochs and batches, checked at load time without importing Keras.

Callbacks are named, never imported from a path: a class of ``keras.callbacks`` listed in
:data:`BUILTIN_CALLBACKS` (with the keyword arguments its constructor takes; the table is
compared with the installed Keras by ``tests/unit/spec/test_fitsettings.py``), or a user's own
class registered with ``keras.saving.register_keras_serializable(package=...)`` and named
by its registered name ``package>ClassName`` (its module listed under ``model.imports``; its
arguments are checked by the worker, which fails the trial as ``invalid_config``). Keras's
other callbacks write files on the worker (``ModelCheckpoint``, ``BackupAndRestore``,
``CSVLogger``, ``TensorBoard``: checkpoints are clonesweep's job) or take Python functions
(``LearningRateScheduler``, ``LambdaCallback``: use a learning-rate schedule, or register a
callback of your own), so they are refused with that hint.

Example:
    >>> from clonesweep.spec._fields import Block
    >>> block = Block.of("sweep.yaml", "training",
    ...                  {"callbacks": [{"name": "EarlyStopping", "patience": 2}]})
    >>> parse_callbacks(block)[0].config
    {'patience': 2}
"""

from __future__ import annotations

from typing import Any

from clonesweep.spec._fields import Block, did_you_mean, is_json_data, kind_of
from clonesweep.spec.model import CallbackSpec

__all__ = ["BUILTIN_CALLBACKS", "parse_callbacks", "parse_class_weight"]

#: ``keras.callbacks`` classes a sweep file may name, with their keyword arguments.
BUILTIN_CALLBACKS: dict[str, frozenset[str]] = {
    "EarlyStopping": frozenset({"monitor", "min_delta", "patience", "verbose", "mode",
                                "baseline", "restore_best_weights", "start_from_epoch"}),
    "ReduceLROnPlateau": frozenset({"monitor", "factor", "patience", "verbose", "mode",
                                    "min_delta", "cooldown", "min_lr"}),
    "TerminateOnNaN": frozenset({"raise_error"}),
}
_REFUSED = {
    "ModelCheckpoint": "it writes files on the worker; clonesweep checkpoints trials itself "
                       "(sweep.checkpoints) and keeps the best model",
    "BackupAndRestore": "it writes files on the worker; clonesweep checkpoints trials itself "
                        "(sweep.checkpoints)",
    "CSVLogger": "it writes files on the worker; every epoch's logs are in the study",
    "TensorBoard": "it writes files on the worker; every epoch's logs are in the study",
    "LearningRateScheduler": "it takes a Python function; give optimizer.learning_rate a "
                             "schedule ({class_name: ExponentialDecay, config: {...}})",
    "LambdaCallback": "it takes Python functions; register a callback class of your own",
}


def parse_class_weight(block: Block) -> dict[int, float] | None:
    """``class_weight: {0: 1.0, 1: 3.5}``: class index -> weight > 0 (Keras's ``fit``)."""
    raw = block.raw("class_weight", None)
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        block.fail("class_weight", f"expected a mapping of class index to weight, not a "
                   f"{kind_of(raw)}", raw, "write it as {0: 1.0, 1: 3.0}")
    out: dict[int, float] = {}
    for key, value in raw.items():
        index = key
        if isinstance(key, str) and key.strip().isdigit():
            index = int(key)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            block.fail(f"class_weight.{key}", "expected a class index (an int >= 0)", key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            block.fail(f"class_weight.{key}", "expected a weight > 0", value)
        out[index] = float(value)
    return out


def parse_callbacks(block: Block) -> tuple[CallbackSpec, ...]:
    """``callbacks: [{name: EarlyStopping, monitor: val_loss, patience: 2}, ...]``."""
    raw = block.raw("callbacks", [])
    if not isinstance(raw, list):
        block.fail("callbacks", f"expected a list of mappings, not a {kind_of(raw)}", raw,
                   "write each as {name: EarlyStopping, patience: 2}")
    return tuple(_callback(Block.of(block.file, block.field(f"callbacks[{i}]"), item))
                 for i, item in enumerate(raw))


def _callback(block: Block) -> CallbackSpec:
    name: str = block.string("name")
    config: dict[str, Any] = {k: v for k, v in block.data.items() if k != "name"}
    for key, value in config.items():
        if not is_json_data(value):
            block.fail(key, "expected JSON data", value)
    if ">" in name:  # a user's registered class: the worker checks its arguments
        return CallbackSpec(name, config)
    if name in _REFUSED:
        block.fail("name", f"keras.callbacks.{name} cannot be named in a sweep file: "
                   f"{_REFUSED[name]}", name)
    known = BUILTIN_CALLBACKS.get(name)
    if known is None:
        block.fail("name", "not a callback a sweep file can name", name,
                   did_you_mean(name, BUILTIN_CALLBACKS) + "; or a class of your own, "
                   "registered with keras.saving.register_keras_serializable(package=...), "
                   "named 'package>ClassName', its module under model.imports")
    for key in config:
        if key not in known:
            block.fail(key, f"{name} takes no argument '{key}'", key,
                       did_you_mean(key, known) if known else "it takes no arguments")
    return CallbackSpec(name, config)
