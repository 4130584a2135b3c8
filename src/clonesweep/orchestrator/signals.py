"""Ctrl-C and SIGTERM while a sweep runs: drain, then cancel.

The first SIGINT or SIGTERM makes the loop stop asking for trials and wait up to ``grace``
seconds for the running ones to finish (their results are told as usual); a second signal,
or the end of the grace period, cancels what still runs: those trials are failed with
``fail_reason: interrupted`` and their params re-queued for the next run. Then the sweep
raises :class:`KeyboardInterrupt` (the command line exits 130).
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Any

__all__ = ["Interrupts"]


class Interrupts:
    """Handlers for SIGINT and SIGTERM, installed for a ``with`` block (main thread only;
    elsewhere a no-op, and Python's own KeyboardInterrupt applies)."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.signals = 0
        self._since = 0.0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals == 1:
            self._since = time.monotonic()

    @property
    def draining(self) -> bool:
        """A signal came: ask for no more trials."""
        return self.signals > 0

    @property
    def cancel_now(self) -> bool:
        """A second signal came, or the grace period is over: cancel what still runs."""
        return self.signals > 1 or (self.signals == 1
                                    and time.monotonic() - self._since >= self.grace)
