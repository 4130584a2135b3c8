"""Model factories for structural search: ``model.<argument>`` params become arguments.

A Keras Tuner ``build(hp)`` function ports in a few lines: every ``hp.*`` call that changes
the *structure* (how many layers, whether a layer exists) becomes a keyword argument with a
default, and every value that only sets a layer's config (units, rates, activations) becomes
a config-path key in the sweep file, addressed by the layer's name. Keras Tuner::

    def build(hp):
        model = keras.Sequential([keras.Input((64,))])
        for i in range(hp.Int("blocks", 1, 3)):
            model.add(keras.layers.Dense(hp.Int(f"units_{i}", 16, 128, step=16),
                                         activation="relu"))
        if hp.Boolean("dropout"):
            model.add(keras.layers.Dropout(hp.Float("rate", 0.1, 0.5)))
        model.add(keras.layers.Dense(10, activation="softmax"))
        model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 1e-2, sampling="log")),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

clonesweep (:func:`digits_blocks`, swept by ``configs/digits_factory.yaml``)::

    model.blocks: {min: 1, max: 3}                         # hp.Int("blocks", 1, 3)
    model.dropout: {values: [true, false]}                 # hp.Boolean("dropout")
    layers.block0.units: {min: 16, max: 128, step: 16}     # hp.Int("units_0", ...)
    layers.block1.units: {min: 16, max: 128, step: 16, when: {model.blocks: [2, 3]}}
    layers.block2.units: {min: 16, max: 128, step: 16, when: {model.blocks: 3}}
    layers.drop.rate: {min: 0.1, max: 0.5, when: {model.dropout: true}}
    optimizer.learning_rate: {min: 1.0e-4, max: 1.0e-2, log: true}

Compiling is clonesweep's job (``training:`` in the sweep file), so the factory only builds.
"""

from __future__ import annotations

from typing import Any

__all__ = ["digits_blocks"]


def digits_blocks(blocks: int = 2, dropout: bool = False, width: int = 64,
                  inputs: int = 64, classes: int = 10) -> Any:
    """An MLP for the digits data: ``blocks`` Dense layers named ``block0``, ``block1``, ...
    of ``width`` units, then a Dropout named ``drop`` if ``dropout``, then ``out``."""
    import keras

    model = keras.Sequential(name=f"digits_blocks_{blocks}")
    model.add(keras.Input((inputs,)))
    for i in range(blocks):
        model.add(keras.layers.Dense(width, activation="relu", name=f"block{i}"))
    if dropout:
        model.add(keras.layers.Dropout(0.25, name="drop"))
    model.add(keras.layers.Dense(classes, activation="softmax", name="out"))
    return model
