"""Per-epoch checkpoints, so that a retried trial resumes where its dead worker stopped.

A worker writes ``<folder>/trial-<number>.npz`` after an epoch when at least
``every_s`` seconds passed since the trial's last checkpoint (0: after every epoch but the
last). It holds every model variable (weights and the dropout / seed-generator states), every
optimizer variable (its step count and slots), the history so far and the number of epochs
done, plus a key: a hash of everything that decides the trial's arithmetic (number, seed,
materialized config, training settings, data). A retry of the same trial loads it only if the
key and the variables' shapes match; otherwise it starts from epoch 0. The data order needs no
state: it is a function of the trial's data-order seed and the epoch
(:func:`clonesweep.workers.engines.kerasfit.epoch_orders`).

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so
a worker killed mid-write leaves the previous checkpoint intact. They are plain NumPy
archives read with ``allow_pickle=False``: loading one runs no code. No Keras here: the caller
hands over and takes back lists of arrays.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Checkpoints", "Saved", "checkpoint_key"]

_FORMAT = 1


@dataclass(frozen=True)
class Saved:
    """A loaded checkpoint: ``epochs_done`` epochs were trained (the next one is that index).

    Attributes:
        epochs_done: Epochs trained before it was written.
        history: The per-epoch metrics of those epochs.
        model: The model's variables, in ``model.variables`` order.
        optimizer: The optimizer's variables, in ``optimizer.variables`` order.
    """

    epochs_done: int
    history: dict[str, list[float]]
    model: list[np.ndarray]
    optimizer: list[np.ndarray]


def checkpoint_key(**parts: Any) -> str:
    """sha256 over the JSON of ``parts`` (sorted keys): what must match to resume."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Checkpoints:
    """The checkpoint files of one sweep's trials, in ``folder``.

    Used by one worker for one trial at a time; different trials use different files.
    Writing never fails a trial: an unwritable folder gives a warning and no checkpoint.
    """

    def __init__(self, folder: str | os.PathLike[str], every_s: float = 30.0) -> None:
        self.folder = Path(folder)
        self.every_s = every_s

    def path(self, number: int) -> Path:
        return self.folder / f"trial-{number}.npz"

    def save(self, number: int, key: str, epochs_done: int, history: dict[str, list[float]],
             model: list[np.ndarray], optimizer: list[np.ndarray]) -> bool:
        """Write trial ``number``'s checkpoint atomically; False (and a warning) on an OS
        error."""
        meta = {"format": _FORMAT, "number": number, "key": key, "epochs_done": epochs_done,
                "history": history, "model": len(model), "optimizer": len(optimizer)}
        arrays = {f"m{i}": np.asarray(a) for i, a in enumerate(model)}
        arrays.update({f"o{i}": np.asarray(a) for i, a in enumerate(optimizer)})
        target = self.path(number)
        tmp: str | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".trial-{number}-", suffix=".tmp",
                                       dir=self.folder)
            with os.fdopen(fd, "wb") as fh:
                arrays["meta"] = np.array(json.dumps(meta))
                np.savez(fh, **arrays)  # type: ignore[arg-type]
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            tmp = None
            return True
        except OSError as exc:
            warnings.warn(f"trial {number}: cannot write its checkpoint in {self.folder}: "
                          f"{exc}; it will not resume mid-training", stacklevel=2)
            return False
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def load(self, number: int, key: str) -> Saved | None:
        """Trial ``number``'s checkpoint if there is one written with ``key``, else None
        (missing, unreadable, or of other settings)."""
        path = self.path(number)
        try:
            with np.load(path, allow_pickle=False) as archive:
                meta = json.loads(str(archive["meta"]))
                if (meta.get("format") != _FORMAT or meta.get("number") != number
                        or meta.get("key") != key):
                    return None
                model = [archive[f"m{i}"] for i in range(int(meta["model"]))]
                optimizer = [archive[f"o{i}"] for i in range(int(meta["optimizer"]))]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"trial {number}: ignoring an unreadable checkpoint {path}: {exc}",
                          stacklevel=2)
            return None
        history = {str(k): [float(v) for v in vals] for k, vals in meta["history"].items()}
        return Saved(int(meta["epochs_done"]), history, model, optimizer)

    def delete(self, number: int) -> None:
        """Remove trial ``number``'s checkpoint (if any); a failure is only warned about."""
        try:
            self.path(number).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            warnings.warn(f"trial {number}: cannot delete its checkpoint: {exc}", stacklevel=2)
