"""A trial's compile settings and callbacks, from the sweep file's ``training`` block.

:func:`compile_trial` compiles a rebuilt model as the sweep says: the optimizer rebuilt from
its registered name and settings (safe mode), the loss, and the metrics, given per output
for a model of several outputs (``metrics: [accuracy]`` on a two-output model becomes
``{out_a: [accuracy], out_b: [accuracy]}``, logged as ``out_a_accuracy`` ...: Keras refuses
a flat list there). :func:`build_callbacks` makes each trial its own instances of the sweep
file's Keras callbacks.

Imports Keras: import this module only on a worker, after the backend is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras

from clonesweep.spec.model import CallbackSpec, TrainingSpec

if TYPE_CHECKING:
    from clonesweep.workers.rebuild import Variant

__all__ = ["build_callbacks", "compile_trial", "metrics_for"]


def compile_trial(variant: Variant, training: TrainingSpec) -> None:
    """Compile the variant's model with the sweep's optimizer (the trial's own settings
    over the fixed ones), loss and metrics."""
    tr = training
    settings = {**tr.optimizer_config, **variant.materialized.optimizer}
    # A registered name ("adam", "Adam", or a custom registered optimizer), rebuilt
    # through Keras's deserializer, which runs in safe mode by default; a learning rate
    # given as a schedule's {class_name, config} is deserialized the same way.
    optimizer = keras.optimizers.get({"class_name": tr.optimizer, "config": settings})
    steps = int(variant.materialized.train.get("steps_per_execution", tr.steps_per_execution))
    model = variant.model
    model.compile(optimizer=optimizer, loss=tr.loss, metrics=metrics_for(model, tr.metrics),
                  steps_per_execution=steps, jit_compile=tr.jit_for(keras.backend.backend()))


def metrics_for(model: keras.Model,
                metrics: tuple[str, ...]) -> list[str] | dict[str, list[str]]:
    """The metrics as ``compile`` takes them for this model: the list itself for one
    output, the same list for each output (by output name) for several."""
    names = list(getattr(model, "output_names", None) or [])
    if len(getattr(model, "outputs", None) or []) > 1 and len(names) > 1 and metrics:
        return {name: list(metrics) for name in names}
    return list(metrics)


def build_callbacks(specs: tuple[CallbackSpec, ...]) -> tuple[Any, ...]:
    """New instances of the sweep file's callbacks, for one trial.

    A name is a class of ``keras.callbacks`` or a registered name (``package>Class``) of a
    user's ``keras.callbacks.Callback`` subclass, registered with
    ``keras.saving.register_keras_serializable``. Nothing else is imported or called.

    Raises:
        ValueError: a name that is neither, or a class that is not a Keras callback.
        TypeError: arguments the class does not take.
    """
    out = []
    for spec in specs:
        cls = _callback_class(spec.name)
        out.append(cls(**spec.config))
    return tuple(out)


def _callback_class(name: str) -> type:
    cls = keras.saving.get_registered_object(name) if ">" in name \
        else getattr(keras.callbacks, name, None)
    if not isinstance(cls, type) or not issubclass(cls, keras.callbacks.Callback):
        raise ValueError(f"{name!r} is not a keras.callbacks class nor a registered "
                         "keras.callbacks.Callback subclass (is its module under "
                         "model.imports?)")
    return cls
