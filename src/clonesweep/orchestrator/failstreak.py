"""Failures that repeat: the sweep stops when its last few trials failed the same way.

When the last :data:`REPEATS_BEFORE_STOP` finished trials, in the order their results reached
the driver, all failed with the same reason and the same message once numbers, paths and ids
are stripped (:func:`normalised`: "trial 3 at /tmp/a.py:12" and "trial 4 at /tmp/b.py:80"
match), every further trial would most likely fail that way too: a broken data loader, a
custom layer that raises, a worker that crashes or runs out of memory on every trial. The
sweep then asks for nothing more, lets the running trials finish and ends with that message
and a hint (:class:`~clonesweep.errors.SweepFailed`, exit 1); ``resume`` continues it once
the cause is fixed.

Any other outcome between them (a trial that completes, is pruned, or fails otherwise) starts
the count again. Two reasons never count: ``nan_loss`` and ``timeout`` are outcomes of the
sampled values (a learning rate that diverges, a slow corner of the space) that a sweep
explores by design, and a region of the space that produces them can easily yield three in a
row. Retried failures count once, as the trial's final result; trials failed by the driver
(``driver_died``, ``interrupted``) are re-queued, not finished, and are not seen here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from clonesweep.trials import FailReason, TrialResult, TrialState

__all__ = ["REPEATS_BEFORE_STOP", "FailureStreak", "normalised"]

#: Finished trials in a row that failed the same way before the sweep stops.
REPEATS_BEFORE_STOP = 3

# Outcomes of the sampled values, not of a broken setup: never a reason to stop.
_SEARCH_OUTCOMES = (FailReason.NAN_LOSS, FailReason.TIMEOUT)

_HINTS = {
    FailReason.USER_ERROR: "fix the code the message names (the data loader, a custom layer, "
                           "the objective's metric; `clonesweep validate FILE --data` calls "
                           "the loader once)",
    FailReason.INVALID_CONFIG: "the sampled values build a model Keras refuses: narrow the "
                               "search-space key the message names (`clonesweep validate FILE` "
                               "rebuilds the corners)",
    FailReason.OOM: "each trial runs out of host memory: lower the batch size or the model's "
                    "size, or give each trial more memory (`sweep.resources`)",
    FailReason.GPU_OOM: "each trial runs out of GPU memory: lower the batch size or raise "
                        "`sweep.resources.gpu`",
    FailReason.WORKER_DIED: "a worker dies on every trial: see the worker logs in the run "
                            "folder's logs/, and try one trial with `clonesweep repro FILE N "
                            "--train`",
}

# Stripped before comparing: paths (/a/b.py, C:\a\b), hex ids and addresses, numbers.
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:\\|\.{0,2}/)[^\s'\",:;()\[\]]+")
_HEX = re.compile(r"\b(?:0x[0-9a-fA-F]+|(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,})\b")
_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _head(message: str | None, limit: int = 400) -> str:
    """The message before its traceback, on one line, terminal escapes gone: Keras wraps an
    error from a layer as "Exception encountered when calling X.call()." with the error's
    own text on the lines after it."""
    text = _ESCAPE.sub("", (message or "").split("Traceback (most recent call last)")[0])
    lines = [line.strip() for line in text.splitlines()]
    kept = []
    for line in lines:
        if line.startswith("Arguments received by"):
            break  # then the layer's arguments: not the error
        if line:
            kept.append(line)
    head = " ".join(kept)
    return head if len(head) <= limit else head[:limit - 3] + "..."


def normalised(message: str) -> str:
    """``message`` with paths, hex ids and numbers replaced, so that two failures that differ
    only in them compare equal.

    >>> normalised("trial 3 failed at /tmp/x/loader.py:12 (actor 9f8e7d6c5b4a)")
    'trial <n> failed at <path>:<n> (actor <id>)'
    """
    text = _PATH.sub("<path>", message.strip())
    text = _HEX.sub("<id>", text)
    return _NUMBER.sub("<n>", text)


@dataclass
class FailureStreak:
    """The last finished trials' failures; :meth:`see` says when they repeat enough to stop.

    Once stopped it stays stopped (the trials still running may end otherwise). Seeing the
    same trial number again (a tell repeated after a storage error) changes nothing.
    """

    repeats: int = REPEATS_BEFORE_STOP
    numbers: list[int] = field(default_factory=list)
    key: tuple[FailReason, str] | None = None
    last: TrialResult | None = None

    def see(self, result: TrialResult) -> bool:
        """Record a finished trial's result; True once the last ``repeats`` failed alike."""
        if (self.stopped or result.number in self.numbers
                or (result.reason is not None and result.reason.requeued)):
            return self.stopped
        key = self._key(result)
        if key is None or key != self.key:
            self.numbers = []
        self.key = key
        if key is not None:
            self.numbers.append(result.number)
            self.last = result
        return self.stopped

    @property
    def stopped(self) -> bool:
        return len(self.numbers) >= self.repeats

    def message(self) -> str:
        """Why the sweep stopped: the failure, the trials, and what to do."""
        assert self.last is not None and self.last.reason is not None
        reason = self.last.reason
        numbers = ", ".join(str(n) for n in self.numbers)
        return (f"stopped after {len(self.numbers)} trials failed in a row with the same "
                f"error ({reason.value}; trials {numbers}): {_head(self.last.message)}\n"
                f"hint: {_HINTS.get(reason, 'fix the cause the message names')}; trials "
                f"still running were let finish, and `clonesweep resume FILE` continues the "
                f"sweep")

    @staticmethod
    def _key(result: TrialResult) -> tuple[FailReason, str] | None:
        if (result.state is not TrialState.FAIL or result.reason is None
                or result.reason in _SEARCH_OUTCOMES):
            return None
        return result.reason, normalised(result.message or "")
