"""Tiny models for the packed-trial tests, as config envelopes (JSON-able dicts).

Built in the test process (TensorFlow) and serialized: a config is backend-independent, and
the JAX workers rebuild it. Every model has one plain ``Dropout`` named ``drop``.
"""

from __future__ import annotations

from typing import Any

#: The data loader each model trains on.
LOADER = {"mlp": "clonesweep.datasets:digits", "cnn": "clonesweep.datasets:digits_images",
          "transformer": "clonesweep.datasets:digits"}


def model_config(kind: str) -> dict[str, Any]:
    import keras

    layers = keras.layers
    if kind == "mlp":
        inputs = keras.Input((64,))
        h = layers.Dense(16, activation="relu", name="hidden")(inputs)
    elif kind == "cnn":  # Conv2D + BatchNormalization
        inputs = keras.Input((8, 8, 1))
        h = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
        h = layers.BatchNormalization(name="bn")(h)
        h = layers.Activation("relu")(h)
        h = layers.Flatten()(h)
    else:  # a Transformer block over 8 tokens of 8 features
        inputs = keras.Input((64,))
        t = layers.Dense(8, name="embed")(layers.Reshape((8, 8))(inputs))
        a = layers.MultiHeadAttention(2, 4, dropout=0.1, name="mha")(t, t)
        t = layers.LayerNormalization(name="norm")(layers.Add()([t, a]))
        h = layers.GlobalAveragePooling1D()(t)
    h = layers.Dropout(0.2, name="drop")(h)
    outputs = layers.Dense(10, activation="softmax", name="out")(h)
    model = keras.Model(inputs, outputs, name=f"packed_{kind}")
    config: dict[str, Any] = keras.saving.serialize_keras_object(model)
    return config


def sweep_yaml(kind: str, *, trials: int, parameters: str, epochs: int = 2,
               pack: str = "{enabled: true, max_trials: 4}", extra: str = "",
               sweep_extra: str = "", sampler: str = "{name: random, seed: 0}",
               limit: int = 300, training_extra: str = "") -> str:
    """A sweep file over ``model.json`` (write the config there) for ``kind``."""
    return f"""
name: packed_{kind}
model:
  config: model.json
data:
  loader: {LOADER[kind]}
  kwargs: {{limit: {limit}}}
training:
  epochs: {epochs}
  batch_size: 32
  optimizer: {{name: adam, learning_rate: 0.003}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
  pack: {pack}{training_extra}
objective:
  metric: val_accuracy
  direction: maximize
parameters:{parameters}
sweep:
  trials: {trials}
  parallel: 1
  sampler: {sampler}
  run_dir: runs{sweep_extra}
{extra}"""
