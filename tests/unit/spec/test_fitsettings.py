"""``training.class_weight`` and ``training.callbacks`` are read and checked at load time (no
Keras import), and the table of callbacks a sweep file may name matches the installed Keras."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from clonesweep.errors import SpecError
from clonesweep.spec import CallbackSpec, load_sweep
from clonesweep.spec.fitsettings import BUILTIN_CALLBACKS


def test_class_weight_and_callbacks_load_into_the_training_spec(sweep_file: Any) -> None:
    spec = load_sweep(sweep_file(training_extra="""
  class_weight: {0: 1.0, 1: 2.5}
  callbacks:
    - {name: EarlyStopping, monitor: val_loss, patience: 2, restore_best_weights: true}
    - {name: ReduceLROnPlateau, factor: 0.5}
    - {name: "mypkg>MyCallback", every: 3}"""))
    assert spec.training.class_weight == {0: 1.0, 1: 2.5}
    assert spec.training.callbacks == (
        CallbackSpec("EarlyStopping", {"monitor": "val_loss", "patience": 2,
                                       "restore_best_weights": True}),
        CallbackSpec("ReduceLROnPlateau", {"factor": 0.5}),
        CallbackSpec("mypkg>MyCallback", {"every": 3}))
    assert spec.training.callbacks[0].config["patience"] == 2


@pytest.mark.parametrize(("extra", "field", "words"), [
    ("\n  class_weight: [1.0, 2.0]", "training.class_weight", "mapping of class index"),
    ("\n  class_weight: {0: 1.0, 1: -2}", "training.class_weight.1", "weight > 0"),
    ("\n  class_weight: {a: 1.0}", "training.class_weight.a", "class index"),
    ("\n  callbacks: {name: EarlyStopping}", "training.callbacks", "list of mappings"),
    ("\n  callbacks: [{name: EarlyStoping}]", "training.callbacks[0].name",
     "did you mean 'EarlyStopping'"),
    ("\n  callbacks: [{name: EarlyStopping, patients: 2}]", "training.callbacks[0].patients",
     "did you mean 'patience'"),
    ("\n  callbacks: [{name: ModelCheckpoint, filepath: /tmp/x.keras}]",
     "training.callbacks[0].name", "writes files on the worker"),
    ("\n  callbacks: [{name: LearningRateScheduler}]", "training.callbacks[0].name",
     "schedule"),
    ("\n  callbacks: [{patience: 2}]", "training.callbacks[0].name", "required"),
])
def test_bad_fit_settings_name_the_field(sweep_file: Any, extra: str, field: str,
                                         words: str) -> None:
    with pytest.raises(SpecError) as info:
        load_sweep(sweep_file(training_extra=extra))
    assert info.value.field == field
    assert words in str(info.value)


def test_the_callback_table_matches_keras() -> None:
    keras = pytest.importorskip("keras")
    for name, keys in BUILTIN_CALLBACKS.items():
        cls = getattr(keras.callbacks, name)
        params = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        assert params == keys, name


def test_a_learning_rate_schedule_loads_as_keras_serializes_it(sweep_file: Any) -> None:
    path = sweep_file(optimizer=None, training_extra="""
  optimizer:
    name: adam
    learning_rate: {class_name: ExponentialDecay,
                    config: {initial_learning_rate: 0.01, decay_steps: 10, decay_rate: 0.9}}""")
    spec = load_sweep(path)
    assert spec.training.optimizer_config["learning_rate"]["class_name"] == "ExponentialDecay"
