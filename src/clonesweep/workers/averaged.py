"""One ``.keras`` model that averages trained ensemble members.

A Functional model whose layers are the members (nested models, renamed ``member_00``...)
and whose output is ``keras.layers.Average`` of theirs: built only from built-in layers and
the members' own configs, so it loads back with ``keras.saving.load_model(safe_mode=True)``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

__all__ = ["average_models", "load_member"]


def _input_specs(model: keras.Model) -> list[tuple[str, tuple[int | None, ...], str]]:
    if not getattr(model, "inputs", None):
        raise ValueError(f"member '{model.name}' has no symbolic inputs (a subclassed model "
                         "built by a call), so no averaged model wraps it")
    return [(t.name, tuple(t.shape[1:]), str(t.dtype)) for t in model.inputs]


def load_member(path: Path | str) -> keras.Model:
    """Load a member ``.keras`` file in safe mode, without its optimizer."""
    import keras

    return keras.saving.load_model(str(path), safe_mode=True, compile=False)


def average_models(member_files: Sequence[Path | str], out: Path | str) -> Path:
    """Write to ``out`` a model whose output is the mean of the members' outputs.

    Raises:
        ValueError: no member, members with different inputs, or members with no symbolic
            inputs to wrap (a subclassed model built by a call).
    """
    import keras

    if not member_files:
        raise ValueError("an averaged model needs at least one member")
    members = []
    for i, path in enumerate(member_files):
        loaded = load_member(path)
        envelope = copy.deepcopy(keras.saving.serialize_keras_object(loaded))
        envelope["config"]["name"] = f"member_{i:02d}"
        renamed = keras.saving.deserialize_keras_object(envelope, safe_mode=True)
        renamed.set_weights(loaded.get_weights())
        members.append(renamed)
    # The first member's input structure (one tensor, a list, or a dict of named inputs, as
    # keras-hub backbones take), rebuilt as new Input tensors.
    specs = [_input_specs(m) for m in members]
    if any(spec != specs[0] for spec in specs):
        raise ValueError(f"members have different inputs: {specs[0]} and others")
    first = members[0]
    structure = first.inputs[0] if len(first.inputs) == 1 else first.input
    inp = keras.tree.map_structure(
        lambda t: keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=t.name), structure)
    outputs = [m(inp) for m in members]
    avg = _average(keras, outputs)
    model = keras.Model(inp, avg, name="ensemble")
    model.save(str(out))
    return Path(out)


def _average(keras: Any, outputs: list[Any]) -> Any:
    """The members' outputs averaged, output by output for a model of several (a dict or a
    list of outputs: one ``Average`` layer each)."""
    if len(outputs) == 1:
        return outputs[0]
    first = outputs[0]
    if isinstance(first, dict):
        return {k: keras.layers.Average(name=f"average_{k}")([o[k] for o in outputs])
                for k in first}
    if isinstance(first, (list, tuple)):
        return [keras.layers.Average(name=f"average_{i}")([o[i] for o in outputs])
                for i in range(len(first))]
    return keras.layers.Average(name="average")(outputs)
