"""What `validate --data` and every `run` check before a trial exists: the training names
Keras must resolve, and one call of the data loader on the driver.

Names: the loss, each metric and the optimizer (with its settings at every corner of the
search space) are resolved the way a worker's ``compile`` and ``fit`` resolve them, so a
typo fails here and not in every trial.

Data: the loader returns ``(x_train, y_train, x_val, y_val)`` (a pair of datasets is checked
by its first batches, see ``_check_streams``); each is a non-empty array of
numbers (no strings, objects or complex values), with no NaN or infinity, x fitting the
model's input, as many targets as samples, and targets the model's output and loss can
take (class indices below the output's width for a sparse loss, one column per output
unit for a dense one, values in [0, 1] for a binary one). All-NaN inputs would otherwise
train to a NaN loss that some metrics still score as perfect.

About 310 lines, past the usual 300: one call of the loader is checked against one model,
leaf by leaf for arrays and batch by batch for datasets, and each check's message shares
the same file/field/value/hint wording; split, the two kinds of data would drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from clonesweep.errors import SpecError
from clonesweep.spec.model import SweepSpec
from clonesweep.workers.streams import StreamData, batched, first_batch, stream_of

__all__ = ["check_data", "check_training_names"]

_NAMES = ("x_train", "y_train", "x_val", "y_val")
#: Names Keras's compile maps itself (to the accuracy / crossentropy that fits the loss)
#: rather than through ``keras.metrics.get``.
_COMPILE_METRICS = ("accuracy", "acc", "crossentropy", "ce")
_NUMBER_KINDS = "biuf"  # bool, int, unsigned, float


def check_training_names(spec: SweepSpec, corner_params: Sequence[dict[str, Any]]) -> None:
    """Resolve the loss, the metrics and the optimizer (at each corner's settings).

    Raises:
        SpecError: Naming ``training.loss``, ``training.metrics[i]``,
            ``training.optimizer`` or the ``parameters.optimizer.<key>`` whose value the
            optimizer refuses.
    """
    import keras

    from clonesweep.spec.model import SPECIAL_METRICS

    tr, file = spec.training, str(spec.file)
    imports = ("a custom one must be registered (keras.saving.register_keras_serializable) "
               "in a module listed in model.imports")
    try:
        keras.losses.get(tr.loss)
    except Exception as exc:
        raise SpecError(f"Keras knows no loss of this name: {_first_line(exc)}", file=file,
                        field="training.loss", value=tr.loss,
                        hint=f"e.g. sparse_categorical_crossentropy, mse; {imports}") from exc
    for index, metric in enumerate(tr.metrics):
        if metric in _COMPILE_METRICS or metric in SPECIAL_METRICS:
            continue
        try:
            keras.metrics.get(metric)
        except Exception as exc:
            raise SpecError(f"Keras knows no metric of this name: {_first_line(exc)}",
                            file=file, field=f"training.metrics[{index}]", value=metric,
                            hint=f"e.g. accuracy, mae, auc; {imports}") from exc
    _check_optimizer(spec, corner_params, imports)


def _check_optimizer(spec: SweepSpec, corner_params: Sequence[dict[str, Any]],
                     imports: str) -> None:
    """Build the optimizer with its settings at each corner; a setting whose default is a
    number must be a number (Keras stores a string as it is, and fit fails on it)."""
    import keras

    tr, file = spec.training, str(spec.file)
    settings: list[tuple[str, dict[str, Any]]] = [("training.optimizer", {})]
    for params in corner_params:
        own = {k[len("optimizer."):]: v for k, v in params.items()
               if k.startswith("optimizer.")}
        if own:
            settings.append((f"parameters.optimizer.{next(iter(own))}", own))
    for field, own in settings:
        try:
            keras.optimizers.get({"class_name": tr.optimizer,
                                  "config": {**tr.optimizer_config, **own}})
        except Exception as exc:
            value = tr.optimizer if field == "training.optimizer" else own
            raise SpecError(f"Keras cannot build the optimizer: {_first_line(exc)}",
                            file=file, field=field, value=value,
                            hint=f"e.g. adam, sgd, rmsprop with settings it takes; {imports}")\
                from exc
    defaults = keras.optimizers.get(tr.optimizer).get_config()
    given = [(f"training.optimizer.{k}", k, v) for k, v in tr.optimizer_config.items()]
    given += [(f"parameters.optimizer.{k[len('optimizer.'):]}", k[len("optimizer."):], v)
              for params in corner_params for k, v in params.items()
              if k.startswith("optimizer.")]
    for field, key, value in given:
        default = defaults.get(key)
        number = isinstance(default, (int, float)) and not isinstance(default, bool)
        if number and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SpecError(f"the optimizer's {key} must be a number, not a "
                            f"{type(value).__name__}", file=file, field=field, value=value,
                            hint="write it as a YAML number (e.g. 0.9, 1e-3)")


def check_data(spec: SweepSpec, model: Any) -> tuple[dict[str, Any], Any]:
    """Call the loader once; check its arrays against ``model``.

    Returns:
        Their shapes as lists, and what the loader returned when it is arrays (None for
        datasets, which each worker builds for itself): ``run`` hands those arrays to the
        workers rather than calling the loader a second time on the driver.

    Raises:
        SpecError: Naming ``data.loader``, what is wrong with which array and a hint.
    """
    from clonesweep.workers.runner import import_object

    def refuse(problem: str, value: Any, hint: str) -> SpecError:
        return SpecError(f"the data loader {problem}", file=str(spec.file),
                         field="data.loader", value=value, hint=hint)

    try:
        loaded = import_object(spec.data.loader)(**spec.data.kwargs)
    except Exception as exc:
        raise refuse(f"failed: {type(exc).__name__}: {exc}", spec.data.loader,
                     "run it by hand with data.kwargs to see why") from exc
    try:
        stream = stream_of(loaded)
    except TypeError as exc:
        raise refuse(f"returned {str(exc).split('; got ')[-1]}", spec.data.loader,
                     "return (train, val) datasets of one kind (tf.data or "
                     "keras.utils.PyDataset), or (x_train, y_train, x_val, y_val) arrays") \
            from exc
    if stream is not None:
        return _check_streams(stream, spec.training.loss, model, refuse), None
    if not isinstance(loaded, (tuple, list)) or len(loaded) not in (4, 5, 6):
        what = type(loaded).__name__ + (f" of length {len(loaded)}"
                                        if isinstance(loaded, (tuple, list)) else "")
        raise refuse(f"returned a {what}", spec.data.loader,
                     "return (x_train, y_train, x_val, y_val), optionally followed by "
                     "sample_weight and val_sample_weight")
    _check_weights(loaded, refuse)
    whole, loaded = loaded, loaded[:4]
    inputs = getattr(model, "inputs", None) or []
    # A model whose one input takes strings (a TextVectorization front) may get str arrays.
    text = len(inputs) == 1 and str(getattr(inputs[0], "dtype", "")) == "string"
    arrays: dict[str, np.ndarray] = {}
    structured = False
    for name, value in zip(_NAMES, loaded, strict=True):
        if isinstance(value, (dict, list, tuple)):
            # Several inputs or outputs (a dict of token ids and masks, a list per output):
            # each leaf is checked; the first stands for the samples' count.
            arrays[name] = _leaves(name, value, refuse, text and name.startswith("x"))
            structured = True
        else:
            arrays[name] = _array(name, value, refuse, text and name.startswith("x"))
    _check_shapes(arrays, model, refuse)
    if not structured:  # targets matched to one output: a structure maps outputs by name
        _check_targets(spec.training.loss, arrays, model, refuse)
    return {name: list(array.shape) for name, array in arrays.items()}, whole


def _leaves(name: str, value: dict[Any, Any] | list[Any] | tuple[Any, ...], refuse: Any,
            text: bool) -> np.ndarray:
    """Check every array of a structured input or target; all hold one row per sample."""
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    if not items:
        raise refuse(f"returns an empty {type(value).__name__} as {name}", name,
                     "return the arrays the model's inputs and outputs take")
    leaves = [_array(f"{name}[{key!r}]", leaf, refuse, text) for key, leaf in items]
    counts = {int(leaf.shape[0]) for leaf in leaves}
    if len(counts) > 1:
        raise refuse(f"returns {name} whose arrays hold different numbers of samples "
                     f"({sorted(counts)})", sorted(counts), "every array needs one row per sample")
    return leaves[0]


def _check_weights(loaded: Sequence[Any], refuse: Any) -> None:
    """Sample weights (the 5th and 6th items): one finite, non-negative number per sample."""
    for index, name, x_name in ((4, "sample_weight", "x_train"), (5, "val_sample_weight", "x_val")):
        if len(loaded) <= index or loaded[index] is None:
            continue
        try:
            weights = np.asarray(loaded[index], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise refuse(f"returns a {name} that is not numbers ({_first_line(exc)})", name,
                         "return one float weight per sample") from exc
        samples = len(loaded[index - 4]) if hasattr(loaded[index - 4], "__len__") else None
        if weights.ndim != 1 or (samples is not None and len(weights) != samples):
            raise refuse(f"returns a {name} of shape {list(weights.shape)} for {samples} "
                         f"{x_name} samples", list(weights.shape),
                         "return a 1-D array with one weight per sample")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise refuse(f"returns a {name} with NaN, Inf or negative weights", name,
                         "weights must be finite and >= 0")


def _array(name: str, value: Any, refuse: Any, text: bool) -> np.ndarray:
    """``value`` as an array of numbers (of strings, where the model takes ``text``)."""
    try:
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
    except Exception as exc:
        raise refuse(f"returns a {name} that is not an array: {_first_line(exc)}",
                     type(value).__name__, "return numpy arrays (np.asarray(...))") from exc
    if array.dtype.kind not in _NUMBER_KINDS + ("USO" if text else ""):
        raise refuse(f"returns {name} of dtype {array.dtype} ({array.dtype.kind!r}); "
                     "expected numbers", str(array.dtype),
                     "convert it in the loader: strings to numbers (e.g. with a lookup), "
                     "objects with .astype('float32')")
    if array.ndim == 0 or array.shape[0] == 0:
        raise refuse(f"returns an empty {name} (shape {list(array.shape)})",
                     list(array.shape), "return at least one sample in each array")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            count, where = int(bad.sum()), np.argwhere(bad)[0].tolist()
            raise refuse(f"returns {name} with {count} NaN or infinite value(s) of "
                         f"{array.size} (the first at {where})", f"{name}{where}",
                         "clean or impute the data in the loader; a NaN trains to a NaN "
                         "loss")
    return array


def _check_shapes(arrays: dict[str, np.ndarray], model: Any, refuse: Any) -> None:
    inputs = getattr(model, "inputs", None) or []
    wanted = [None if d is None else int(d) for d in tuple(inputs[0].shape)[1:]] \
        if len(inputs) == 1 else None
    for name in ("x_train", "x_val"):
        got = arrays[name].shape
        if wanted is not None and not _fits(got[1:], wanted):
            raise refuse(f"returns {name} of shape {list(got)}, which does not fit the "
                         f"model's input (batch, {', '.join(map(str, wanted))})", list(got),
                         "reshape the arrays in the loader, or fix the model's Input")
    for x, y in (("x_train", "y_train"), ("x_val", "y_val")):
        if arrays[x].shape[0] != arrays[y].shape[0]:
            raise refuse(f"returns {x} and {y} of different lengths "
                         f"({arrays[x].shape[0]} and {arrays[y].shape[0]})",
                         [arrays[x].shape[0], arrays[y].shape[0]],
                         "return as many targets as samples")


def _check_targets(loss: str, arrays: dict[str, np.ndarray], model: Any, refuse: Any) -> None:
    """Targets the single output and the loss can take (other models: not checked)."""
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1 or not isinstance(loss, str):
        return
    units = outputs[0].shape[-1]
    name = loss.lower()
    for key in ("y_train", "y_val"):
        y = arrays[key]
        if "sparse_categorical" in name and units is not None:
            if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
                raise refuse(f"returns {key} of shape {list(y.shape)}; the loss {loss} takes "
                             "one class index per sample", list(y.shape),
                             "return class indices (y.argmax(-1) of one-hot targets), or "
                             "use the loss categorical_crossentropy")
            if not np.array_equal(y, np.floor(y)) or y.min() < 0 or y.max() >= units:
                low, high = y.min().item(), y.max().item()
                raise refuse(f"returns {key} from {low} to {high}; the model's output has "
                             f"{units} units, so {loss} takes whole class indices from 0 to "
                             f"{units - 1}", [low, high],
                             "map the labels to 0..N-1 in the loader, or widen the model's "
                             "output layer")
        elif name in ("categorical_crossentropy", "categorical_focal_crossentropy") \
                and units is not None and tuple(y.shape[1:]) != (units,):
            raise refuse(f"returns {key} of shape {list(y.shape)}; {loss} takes one column "
                         f"per output unit ({units})", list(y.shape),
                         "one-hot encode the labels, or use sparse_categorical_crossentropy")
        elif "binary" in name and (y.min() < 0 or y.max() > 1):
            low, high = y.min().item(), y.max().item()
            raise refuse(f"returns {key} from {low} to {high}; {loss} takes targets in "
                         "[0, 1]", [low, high], "map the labels to 0 and 1 in the loader")


def _fits(got: tuple[int, ...], wanted: list[int | None]) -> bool:
    return len(got) == len(wanted) and all(w is None or w == g
                                           for g, w in zip(got, wanted, strict=True))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _check_streams(data: StreamData, loss: Any, model: Any, refuse: Any) -> dict[str, Any]:
    """A pair of datasets (:mod:`clonesweep.workers.streams`), checked cheaply: each must
    yield ``(x, y)`` or ``(x, y, sample_weight)``; its first batch (an unbatched tf.data
    dataset batched by 32 for the look) is checked as whole arrays are, which also checks a
    tf.data element spec against the model's input. Later batches are not read (a NaN
    there shows as a ``nan_loss`` trial). Returns the first batches' shapes as lists."""
    arrays: dict[str, np.ndarray] = {}
    structured = False
    for part, ds in (("train", data.train), ("val", data.val)):
        name = f"the {part} {data.kind.value} dataset"
        try:
            first = first_batch(ds if batched(ds, model) else ds.batch(32))
        except (StopIteration, IndexError) as exc:
            raise refuse(f"returns {name} empty", part,
                         "return datasets holding at least one batch") from exc
        if not isinstance(first, (tuple, list)) or len(first) not in (2, 3):
            got = (f"a {type(first).__name__} of {len(first)}"
                   if isinstance(first, (tuple, list)) else type(first).__name__)
            raise refuse(f"returns {name} yielding {got}", got,
                         "yield (x, y) or (x, y, sample_weight) from each dataset")
        for role, value in (("x", first[0]), ("y", first[1])):
            key = f"{role}_{part}"
            if isinstance(value, (dict, list, tuple)):
                arrays[key] = _leaves(key, value, refuse, False)
                structured = True
            else:
                arrays[key] = _array(key, value, refuse, False)
    _check_shapes(arrays, model, refuse)
    if not structured:
        _check_targets(loss, arrays, model, refuse)
    return {f"{name} (first batch)": list(a.shape) for name, a in arrays.items()}
