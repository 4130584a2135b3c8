"""Data beyond arrays: a loader that returns a pair of datasets, ``(train, val)``.

A ``data.loader`` returns either ``(x_train, y_train, x_val, y_val)`` arrays (optionally
followed by the sample weights: :class:`~clonesweep.workers.engines.base.TrainData`) or a
pair of datasets (:class:`StreamData`):

- two ``tf.data.Dataset``\\ s yielding ``(x, y)`` or ``(x, y, sample_weight)``: batched ones
  keep their batching; unbatched ones (whose elements have the rank of one sample) are
  batched by ``training.batch_size`` (the validation set by ``validation_batch_size``).
  ``keras.utils.image_dataset_from_directory`` and friends return batched ones.
- two ``keras.utils.PyDataset``\\ s (each item one batch; Keras's fit iterates them).

What seeds do with datasets: clonesweep does not reorder a dataset. Arrays are visited in a
per-epoch permutation drawn from the trial's ``data_order`` seed; a dataset is iterated in
its own order, and a shuffle inside it is the user's (seeded there, or not). Every other
seed (initializers, dropout, seeded layers) applies as with arrays. The trial records the
data kind and its order (:class:`~clonesweep.trials.DataKind`).

The fingerprint of datasets is of their structure, not their contents: the kind, the
element spec (dtypes and shapes) and the length when known, as ``spec:<sha256>``. Reading
the contents would decode every file once per worker, and a shuffled dataset gives other
bytes each time.

Datasets are not picklable in general: each worker calls the loader itself (arrays given
to a Ray backend are loaded once on the driver and shared; see the Ray backend).

No TensorFlow import here: a ``tf.data.Dataset`` can only exist once TensorFlow is imported,
so it is recognised through the already-imported module.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from typing import Any

from clonesweep.trials import DataKind

__all__ = ["StreamData", "batched", "first_batch", "is_py_dataset", "is_tf_dataset",
           "leaf_shapes", "stream_of"]


def is_tf_dataset(x: Any) -> bool:
    """Whether ``x`` is a ``tf.data.Dataset`` (False when TensorFlow was never imported)."""
    tf = sys.modules.get("tensorflow")
    data = getattr(tf, "data", None)
    return data is not None and isinstance(x, data.Dataset)


def is_py_dataset(x: Any) -> bool:
    """Whether ``x`` is a ``keras.utils.PyDataset``."""
    keras = sys.modules.get("keras")
    utils = getattr(keras, "utils", None)
    return utils is not None and isinstance(x, utils.PyDataset)


@dataclass(frozen=True)
class StreamData:
    """A loader's ``(train, val)`` pair of datasets, once per worker.

    Attributes:
        train: The training dataset (yields ``(x, y)`` or ``(x, y, sample_weight)``).
        val: The validation dataset (the same structure).
        kind: Which kind both are.
    """

    train: Any
    val: Any
    kind: DataKind

    #: Sample weights, when any, are inside the batches: nothing for an engine to check.
    weighted = False

    def fingerprint(self) -> str:
        """``spec:`` and a sha256 over the kind, each dataset's element structure and its
        length (not the contents: see the module docstring)."""
        digest = hashlib.sha256(self.kind.value.encode())
        for ds in (self.train, self.val):
            digest.update(repr(_spec(ds)).encode())
        return "spec:" + digest.hexdigest()


def stream_of(loaded: Any) -> StreamData | None:
    """``loaded`` as a :class:`StreamData` when it is a pair of datasets of one kind; None
    when it holds no dataset at all (arrays, which the caller reads).

    Raises:
        TypeError: datasets, but not a pair of one kind (a lone dataset, a dataset with an
            array, a tf.data dataset with a PyDataset), saying what was received.
    """
    items = list(loaded) if isinstance(loaded, (tuple, list)) else [loaded]
    kinds = [_kind(x) for x in items]
    if all(k is None for k in kinds):
        return None
    got = ", ".join(k.value if k is not None else type(x).__name__
                    for k, x in zip(kinds, items, strict=True))
    if len(items) != 2 or kinds[0] is None or kinds[0] is not kinds[1]:
        raise TypeError(f"expected a pair (train, val) of datasets of one kind (tf.data "
                        f"or keras.utils.PyDataset), or (x_train, y_train, x_val, y_val) "
                        f"arrays; got ({got})")
    return StreamData(items[0], items[1], kinds[0])


def _kind(x: Any) -> DataKind | None:
    if is_tf_dataset(x):
        return DataKind.TF_DATA
    if is_py_dataset(x):
        return DataKind.PY_DATASET
    return None


def first_batch(ds: Any) -> Any:
    """The first element (tf.data) or batch (PyDataset) of ``ds`` as NumPy arrays, in the
    dataset's structure. Raises StopIteration (tf.data) or IndexError for an empty one."""
    if is_tf_dataset(ds):
        return next(iter(ds.take(1).as_numpy_iterator()))
    return ds[0]


def leaf_shapes(x: Any) -> list[tuple[int | None, ...]]:
    """The shapes of the leaves of ``x`` (arrays or ``TensorSpec``\\ s), depth first."""
    if isinstance(x, dict):
        return [s for key in sorted(x) for s in leaf_shapes(x[key])]
    if isinstance(x, (tuple, list)):
        return [s for item in x for s in leaf_shapes(item)]
    shape = getattr(x, "shape", ())
    return [tuple(None if d is None else int(d) for d in shape)]


def batched(ds: Any, model: Any) -> bool:
    """Whether ``ds`` yields batches: a PyDataset always does; a tf.data dataset does when
    its first input's elements have the rank of ``model``'s first input (batch axis
    included). A model that does not expose its inputs: batched."""
    if not is_tf_dataset(ds):
        return True
    inputs = getattr(model, "inputs", None) or []
    if not inputs:
        return True
    spec = ds.element_spec
    x = spec[0] if isinstance(spec, (tuple, list)) else spec
    shapes = leaf_shapes(x)
    return not shapes or len(shapes[0]) >= len(tuple(inputs[0].shape))


def _spec(ds: Any) -> Any:
    """What identifies a dataset's structure: tf.data's element spec and cardinality, a
    PyDataset's length and its first batch's dtypes and shapes."""
    if is_tf_dataset(ds):
        return (repr(ds.element_spec), int(ds.cardinality()))
    first = ds[0]

    def describe(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: describe(v) for k, v in sorted(x.items())}
        if isinstance(x, (tuple, list)):
            return [describe(v) for v in x]
        return (str(getattr(x, "dtype", type(x).__name__)), tuple(getattr(x, "shape", ())))

    return (len(ds), describe(first))
