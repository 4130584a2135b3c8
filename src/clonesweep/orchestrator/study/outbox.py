"""Results held while the study's storage is unreachable, written in order when it returns.

A database restart or a network blip must not fail a trial that trained fine: the sweep loop
puts each finished trial's result here; :meth:`Outbox.flush` writes them in order and, when
the storage raises a connection error, keeps them and tries again later, backing off from 1 s
to 30 s. While results are held the loop asks for no new trial. After ``max_wait_s`` of
storage errors in a row the sweep fails (:class:`~clonesweep.errors.SweepFailed`), naming the
trials whose results could not be written (they stay RUNNING in the study, and a resume
re-queues them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import optuna
import sqlalchemy.exc

from clonesweep.errors import SweepFailed

__all__ = ["STORAGE_ERRORS", "Outbox"]

log = logging.getLogger(__name__)

#: What an unreachable storage raises (Optuna wraps SQLAlchemy's errors in its own).
STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError)

class Outbox:
    """An ordered queue of writes to the study, each a ``(label, write)`` pair; a ``write``
    that fails on a storage error is called again later, so it must be safe to repeat."""

    def __init__(self, max_wait_s: float = 600.0) -> None:
        self.max_wait_s = max_wait_s
        self.items: list[tuple[str, Callable[[], None]]] = []
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._backoff = 1.0

    def __len__(self) -> int:
        return len(self.items)

    def put(self, label: str, write: Callable[[], None]) -> None:
        self.items.append((label, write))
        self.flush()

    def flush(self) -> None:
        """Write what is held, oldest first; stop at the first storage error.

        Raises:
            SweepFailed: The storage has failed for more than ``max_wait_s``.
        """
        now = time.monotonic()
        if not self.items or now < self._retry_at:
            return
        while self.items:
            try:
                self.items[0][1]()
            except STORAGE_ERRORS as exc:
                self._failed(now, exc)
                return
            self.items.pop(0)
        if self._down_since is not None:
            log.warning("storage is back after %.0f s; held results written",
                        now - self._down_since)
        self._down_since, self._backoff = None, 1.0

    def _failed(self, now: float, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = now
            log.warning("storage unreachable; holding %d result(s): %s", len(self.items),
                        str(exc).splitlines()[0][:200])
        if now - self._down_since > self.max_wait_s:
            held = ", ".join(label for label, _ in self.items)
            raise SweepFailed(f"the study's storage has been unreachable for "
                              f"{now - self._down_since:.0f} s; results not written: {held}; "
                              f"last error: {str(exc).splitlines()[0][:300]}") from exc
        self._retry_at = now + self._backoff
        self._backoff = min(2 * self._backoff, 30.0)
