"""Four model shapes over the digits data: an MLP, a Conv+BatchNorm CNN, a small
Transformer block and an LSTM, each ending in a 10-class softmax ``out``.

They show an engine on more than one kind of layer (Dense, Conv2D, BatchNormalization,
MultiHeadAttention, LayerNormalization, LSTM with its own dropouts, Dropout): the JAX
fused-members test and ``bench/fused_any.py`` build theirs here, at their own sizes. Each
takes the digits reshaped to its :data:`INPUT_SHAPES` entry (64 features; 8x8 images of one
channel; 8 tokens or time steps of 8 features).

>>> model = digits_shape("cnn", filters=4)
>>> model.input_shape, model.get_layer("conv").filters
((None, 8, 8, 1), 4)
"""

from __future__ import annotations

from typing import Any

__all__ = ["INPUT_SHAPES", "KINDS", "digits_shape"]

KINDS = ("mlp", "cnn", "transformer", "recurrent")
INPUT_SHAPES: dict[str, tuple[int, ...]] = {"mlp": (64,), "cnn": (8, 8, 1),
                                            "transformer": (8, 8), "recurrent": (8, 8)}


def digits_shape(kind: str = "mlp", *, hidden: int = 32, filters: int = 8, embed: int = 16,
                 heads: int = 2) -> Any:
    """One of :data:`KINDS`: ``mlp`` (Dense ``hidden`` units, Dropout 0.2), ``cnn`` (Conv2D of
    ``filters`` 3x3 filters, BatchNormalization, Dropout 0.2) or ``transformer`` (a Dense
    ``embed`` of each token, MultiHeadAttention of ``heads`` heads of size 8 with a residual
    LayerNormalization, Dropout 0.1, average over tokens) or ``recurrent`` (an LSTM of
    ``hidden`` units over the 8 rows, with input and recurrent dropout 0.1, then Dropout
    0.2). Layers are named ``hidden`` / ``conv``, ``bn`` / ``embed``, ``mha``, ``ln`` /
    ``rnn``; then ``drop`` and ``out``."""
    import keras

    if kind not in INPUT_SHAPES:
        raise ValueError(f"kind must be one of {KINDS}, but got kind={kind!r}")
    layers = keras.layers
    inputs = keras.Input(INPUT_SHAPES[kind])
    if kind == "mlp":
        h = layers.Dense(hidden, activation="relu", name="hidden")(inputs)
        h = layers.Dropout(0.2, name="drop")(h)
    elif kind == "cnn":
        h = layers.Conv2D(filters, 3, padding="same", name="conv")(inputs)
        h = layers.BatchNormalization(name="bn")(h)
        h = layers.Activation("relu")(h)
        h = layers.Flatten()(h)
        h = layers.Dropout(0.2, name="drop")(h)
    elif kind == "recurrent":
        h = layers.LSTM(hidden, dropout=0.1, recurrent_dropout=0.1, name="rnn")(inputs)
        h = layers.Dropout(0.2, name="drop")(h)
    else:
        t = layers.Dense(embed, name="embed")(inputs)
        a = layers.MultiHeadAttention(heads, 8, dropout=0.1, name="mha")(t, t)
        h = layers.LayerNormalization(name="ln")(layers.Add()([t, a]))
        h = layers.Dropout(0.1, name="drop")(h)
        h = layers.GlobalAveragePooling1D()(h)
    outputs = layers.Dense(10, activation="softmax", name="out")(h)
    return keras.Model(inputs, outputs)
