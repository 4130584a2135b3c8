"""What an ensemble member leaves on its worker, and the fused group a worker trains at once.

An ensemble member is an ordinary trial (a :class:`~clonesweep.trials.TrialSpec` whose seed is
the member seed). A worker started with ``WorkerJob(keep_members=True)`` keeps, for every
member it completes, a :class:`MemberOutput`: the member's validation predictions, the
validation targets it used and the trained model as ``.keras`` bytes. The driver fetches it
with the backend's ``fetch_member(number)``, once the member's result has arrived. Plain
numpy arrays and bytes cross the process boundary, never a Keras object.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clonesweep.trials import TrialResult, TrialSpec

if TYPE_CHECKING:
    import keras

__all__ = ["FusedGroup", "MemberOutput", "model_bytes", "predict"]


@dataclass(frozen=True)
class FusedGroup:
    """Members trained as one stacked model on one worker (:mod:`clonesweep.workers.engines.fused`).

    Attributes:
        number: The group's key: the first member's trial number. The group yields one
            :class:`~clonesweep.trials.TrialResult` with this number; each member's own
            result is in its :class:`MemberOutput`.
        members: The members' specs, same params, each its own member seed.
        attempt: 0 for the first run, 1.. for retries of the whole group.
    """

    number: int
    members: tuple[TrialSpec, ...]
    attempt: int = 0

    def as_spec(self) -> TrialSpec:
        """A stand-in spec for the group's own (failed) result."""
        first = self.members[0]
        return TrialSpec(self.number, dict(first.params), first.seed, self.attempt)

    def retry(self) -> FusedGroup:
        return FusedGroup(self.number, tuple(m.retry() for m in self.members),
                          self.attempt + 1)


@dataclass(frozen=True)
class MemberOutput:
    """A completed member, as its worker kept it.

    Attributes:
        val_pred: The trained model's predictions on the validation inputs.
        y_val: The validation targets they are scored against (the driver checks that every
            member saw the same ones: a data loader that splits differently per process would
            make the ensemble metric meaningless).
        model_bytes: The trained member as a ``.keras`` archive.
        result: The member's own result when it was trained in a group (its own history,
            value and seeds); None for a member run as its own trial (its result came back
            through ``poll``).
        fused: True when the member was trained inside a fused model.
    """

    val_pred: np.ndarray
    y_val: np.ndarray
    model_bytes: bytes
    result: TrialResult | None = None
    fused: bool = False


def predict(model: keras.Model, x: Any, batch_size: int) -> np.ndarray:
    """Inference-mode predictions in chunks, called eagerly: no predict graph to trace."""
    import keras

    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    chunks = []
    for start in range(0, n, batch_size):
        if isinstance(x, dict):
            part: Any = {k: np.asarray(v)[start:start + batch_size] for k, v in x.items()}
        else:
            part = np.asarray(x)[start:start + batch_size]
        out = model(part, training=False)
        chunks.append(np.asarray(keras.ops.convert_to_numpy(out)))
    return np.concatenate(chunks, axis=0)


def model_bytes(model: keras.Model, name: str = "member") -> bytes:
    """The model as a ``.keras`` archive, through a temporary file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.keras")
        model.save(path)
        with open(path, "rb") as fh:
            return fh.read()
