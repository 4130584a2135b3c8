"""Every Keras / TensorFlow internal in clonesweep.workers._keras, used on real objects: a
release that moves or changes one fails here, by name, before it can cost a trial anything."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from clonesweep.workers import _keras


def tiny() -> keras.Model:
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"),
                             keras.layers.Dense(2, activation="softmax", name="out")])


def test_the_installed_keras_is_one_the_graph_engine_was_checked_against() -> None:
    """Not a silent switch: on a new Keras release the graph engine hands every trial to
    Keras's fit (each trial says so), and this test says what to do."""
    assert _keras.keras_release() in _keras.VERIFIED_KERAS, (
        f"Keras {keras.__version__}: the traced-graph engine is off on this release. Run "
        "tests/unit/workers/engines/test_graphfit*.py on it, then add "
        f"'{_keras.keras_release()}' to VERIFIED_KERAS in clonesweep/workers/_keras.py")


def test_compile_utils_resolves_the_loss_and_metrics_compile_would() -> None:
    assert _keras.has_compile_utils()
    y = np.array([[1], [0], [1]])
    pred = np.array([[0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32)
    loss, metrics = _keras.compiled_loss_and_metrics(
        "sparse_categorical_crossentropy", ("accuracy",), y, pred)
    expected = keras.losses.SparseCategoricalCrossentropy()(y, pred)
    assert float(loss(y, pred, None)) == float(expected)
    # Logged as "accuracy", computed as the sparse accuracy picked from the shapes (plain
    # equality of labels and probabilities would give 0).
    assert metrics[0].name == "accuracy"
    metrics[0].update_state(y, pred)
    assert float(metrics[0].result()) == 1.0
    y_bin, p_bin = np.ones((2, 1)), np.full((2, 1), 0.7, np.float32)
    _, binary = _keras.compiled_loss_and_metrics("binary_crossentropy", ("accuracy",),
                                                 y_bin, p_bin)
    binary[0].update_state(y_bin, p_bin)
    assert float(binary[0].result()) == 1.0  # thresholded at 0.5: the binary accuracy


def test_the_learning_rate_is_the_optimizers_variable_unless_a_schedule() -> None:
    opt = keras.optimizers.Adam(0.01)
    rate = _keras.constant_learning_rate(opt)
    assert isinstance(rate, keras.Variable)
    rate.assign(0.5)
    assert float(opt.learning_rate) == 0.5
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    assert _keras.constant_learning_rate(keras.optimizers.Adam(schedule)) is None
    assert _keras.constant_learning_rate(keras.optimizers.SGD(lambda: 0.1)) is None


def test_adam_and_sgd_slots_are_the_optimizers_own_variables_in_weight_order() -> None:
    model = tiny()
    adam = keras.optimizers.Adam()
    adam.build(model.trainable_variables)
    own = {id(v) for v in adam.variables}
    slots = _keras.adam_slots(adam)
    assert len(slots) == 2
    for kind in slots:
        assert [tuple(v.shape) for v in kind] == [tuple(v.shape)
                                                  for v in model.trainable_variables]
        assert all(id(v) in own for v in kind)
    assert "momentum" in slots[0][0].path and "velocity" in slots[1][0].path
    sgd = keras.optimizers.SGD(momentum=0.9)
    sgd.build(model.trainable_variables)
    (momentums,) = _keras.sgd_slots(sgd)
    assert len(momentums) == len(model.trainable_variables)
    plain = keras.optimizers.SGD()
    plain.build(model.trainable_variables)
    assert _keras.sgd_slots(plain) == []


def test_the_dropout_seed_state_is_what_its_next_mask_is_drawn_from() -> None:
    layer = keras.layers.Dropout(0.5, seed=7)
    state = _keras.dropout_seed_state(layer)
    assert state.dtype == "int64" and tuple(state.shape) == (2,)
    before = np.array(state.numpy())
    x = np.ones((4, 16), np.float32)
    first = np.asarray(layer(x, training=True))
    assert not np.array_equal(before, state.numpy())  # the draw advanced it
    state.assign(before)
    assert np.array_equal(first, np.asarray(layer(x, training=True)))


def test_cast_seed_draws_the_mask_keras_dropout_draws() -> None:
    gen = keras.random.SeedGenerator(123)
    seed = np.array(gen.state.numpy())
    x = np.ones((5, 32), np.float32)
    kept_by_keras = np.asarray(keras.random.dropout(x, 0.3, seed=gen)) != 0
    noise = tf.random.stateless_uniform(x.shape, seed=_keras.cast_seed(tf.constant(seed)))
    assert np.array_equal(kept_by_keras, np.asarray(noise >= 0.3))


@pytest.mark.parametrize("before", [False, True])
def test_without_grappler_switches_it_off_inside_only(before: bool) -> None:
    key = "disable_meta_optimizer"
    tf.config.optimizer.set_experimental_options({key: before})
    try:
        with _keras.without_grappler():
            assert tf.config.optimizer.get_experimental_options()[key] is True
        assert tf.config.optimizer.get_experimental_options().get(key, False) is before
    finally:
        tf.config.optimizer.set_experimental_options({key: False})


# -- error text the fence reads: produced for real, so a reworded release fails here -------
def _raised(call: object) -> BaseException:
    try:
        call()  # type: ignore[operator]
    except Exception as exc:
        return exc
    raise AssertionError("expected an error")


def _lambda_refusal() -> BaseException:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2)])
    envelope = keras.saving.serialize_keras_object(model.layers[-1])
    return _raised(lambda: keras.saving.deserialize_keras_object(envelope, safe_mode=True))


def test_a_lambda_refused_in_safe_mode_is_read_as_a_refusal() -> None:
    exc = _lambda_refusal()
    assert _keras.safe_mode_refused(exc), f"Keras reworded its safe-mode refusal: {exc}"
    assert _keras.unknown_classes(exc) == []


def test_an_unregistered_class_is_named_and_is_not_a_refusal() -> None:
    envelope = {"module": "nowhere", "class_name": "NoSuchLayer", "config": {},
                "registered_name": "NoSuchLayer"}
    exc = _raised(lambda: keras.saving.deserialize_keras_object(envelope, safe_mode=True))
    assert _keras.unknown_classes(exc) == ["NoSuchLayer"], f"Keras reworded it: {exc}"
    assert not _keras.safe_mode_refused(exc)


def test_a_nested_deserialization_error_condenses_to_its_innermost_cause() -> None:
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))
    config = keras.saving.serialize_keras_object(model)
    dense = next(c for c in config["config"]["layers"] if c["class_name"] == "Dense")
    dense["config"]["activation"] = "no_such_activation"
    exc = _raised(lambda: keras.saving.deserialize_keras_object(config, safe_mode=True))
    message = f"could not rebuild layer 'd': {type(exc).__name__}: {exc}"
    assert _keras.condensed_deserialization_error(message) == (
        "could not rebuild layer 'd': Could not interpret activation function identifier: "
        "no_such_activation"), f"Keras reworded its nested error: {exc}"
    # Keras's advice to turn safe mode off is dropped; the refusal itself is kept.
    nested = f"head: <class 'X'> failed.\n\nException encountered: {_lambda_refusal()}"
    condensed = _keras.condensed_deserialization_error(nested)
    assert condensed.startswith("head: Requested the deserialization of a `Lambda` layer")
    assert "safe_mode=False" not in condensed and "unsafe_deserialization" not in condensed
    assert _keras.condensed_deserialization_error("plain") == "plain"


def test_tensorflows_out_of_memory_names_its_device() -> None:
    # A real one: the CPU allocator refuses 128 TiB at once, allocating nothing.
    exc = _raised(lambda: tf.zeros([2**45], tf.float32))
    assert type(exc).__name__ == "ResourceExhaustedError"
    assert _keras.memory_exhausted(exc) == "host", f"TensorFlow reworded its OOM: {exc}"
    # On a GPU (none here): the documented format, on TensorFlow's own error class.
    gpu = tf.errors.ResourceExhaustedError(
        None, None, "OOM when allocating tensor with shape[4096,4096] and type float on "
        "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc")
    assert _keras.memory_exhausted(gpu) == "device"
    assert _keras.memory_exhausted(MemoryError()) == "host"
    assert _keras.memory_exhausted(ValueError("shapes differ")) is None
