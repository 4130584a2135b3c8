"""One driver per sweep: a lease kept in the study, refreshed by the running driver.

The lease is the study's user attribute ``driver_lease``: ``{host, pid, token, started,
heartbeat}`` (wall-clock seconds). The driver writes it when it starts and refreshes
``heartbeat`` from its loop every ``HEARTBEAT_S`` seconds. A second driver that finds a
fresh lease refuses to run (:class:`~clonesweep.errors.SweepFailed`) unless told to take
over; a lease whose heartbeat is older than ``STALE_AFTER`` heartbeats, or whose driver ran
on this host and is gone, is stale and taken over silently. A driver that finds, when it
refreshes, that another one took its lease stops.

Taking, refreshing and releasing the lease are each one compare-and-set: the read of the
current lease, the decision and the write happen under the storage's own cross-process lock
(:func:`clonesweep.orchestrator.study.storagelock.storage_lock`: ``flock`` on a SQLite or
journal file, an advisory lock on a PostgreSQL or MySQL server), so of two drivers started
in the same instant exactly one takes the lease and the other reads it and stops.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

import optuna

from clonesweep.errors import SweepFailed

__all__ = ["HEARTBEAT_S", "LEASE_ATTR", "STALE_AFTER", "Lease", "refuse_if_held"]

LEASE_ATTR = "driver_lease"
HEARTBEAT_S = 5.0
STALE_AFTER = 3  # heartbeats


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def holder_alive(lease: dict[str, Any], now: float | None = None) -> bool:
    """Whether the driver that wrote ``lease`` still runs, as far as can be told."""
    if not lease or lease.get("released"):
        return False
    now = time.time() if now is None else now
    if now - float(lease.get("heartbeat", 0.0)) > STALE_AFTER * HEARTBEAT_S:
        return False
    if lease.get("host") == socket.gethostname():
        return _pid_alive(int(lease.get("pid", -1)))
    return True


def refuse_if_held(study: optuna.Study) -> None:
    """Raise SweepFailed if another driver holds a fresh lease on ``study`` (a read only:
    ``run`` asks before its slower checks, so a second driver is told at once).

    Raises:
        SweepFailed: Naming the holder's pid and host, with the hint ``--takeover``.
    """
    previous: dict[str, Any] | None = study.user_attrs.get(LEASE_ATTR)
    if previous and holder_alive(previous):
        age = time.time() - float(previous.get("heartbeat", 0.0))
        raise SweepFailed(
            f"another driver is running sweep {study.study_name!r}: "
            f"pid {previous.get('pid')} on {previous.get('host')}, last heartbeat "
            f"{age:.0f} s ago; wait for it, stop it, or pass --takeover to take the sweep "
            f"over (its lease goes stale {STALE_AFTER * HEARTBEAT_S:g} s after its last "
            f"heartbeat)")


@dataclass
class Lease:
    """This driver's hold on one study. ``acquire`` first, ``beat`` often, ``release`` last."""

    study: optuna.Study
    url: str | None = None  # the study's storage URL: its lock makes each step atomic
    token: str = ""
    started: float = 0.0
    last_beat: float = 0.0

    def acquire(self, takeover: bool = False) -> dict[str, Any] | None:
        """Take the lease; returns the previous holder's lease when it was taken over.

        Raises:
            SweepFailed: Another driver holds a fresh lease and ``takeover`` is False.
        """
        with self._locked():
            return self._acquire(takeover)

    def _acquire(self, takeover: bool) -> dict[str, Any] | None:
        previous: dict[str, Any] | None = self.study.user_attrs.get(LEASE_ATTR)
        if not takeover:
            refuse_if_held(self.study)
        self.token = secrets.token_hex(8)
        self.started = time.time()
        self._write()
        taken = previous if previous and not previous.get("released") else None
        return taken

    def beat(self) -> None:
        """Refresh the heartbeat if it is due.

        Raises:
            SweepFailed: Another driver has taken the lease over.
        """
        if time.monotonic() - self.last_beat < HEARTBEAT_S:
            return
        with self._locked():
            current = self.study.user_attrs.get(LEASE_ATTR) or {}
            if current.get("token") != self.token:
                raise SweepFailed(f"another driver (pid {current.get('pid')} on "
                                  f"{current.get('host')}) took this sweep over; stopping")
            self._write()

    def release(self) -> None:
        """Mark the lease released, so a next driver need not wait; never raises."""
        try:
            with self._locked():
                current = self.study.user_attrs.get(LEASE_ATTR) or {}
                if current.get("token") == self.token:
                    self._write(released=True)
        except Exception:  # storage gone: the lease goes stale by itself
            pass

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        if self.url is None:
            return contextlib.nullcontext()
        from clonesweep.orchestrator.study.storagelock import storage_lock

        return storage_lock(self.url, f"clonesweep-lease:{self.study.study_name}")

    def _write(self, released: bool = False) -> None:
        lease = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                 "started": self.started, "heartbeat": time.time()}
        if released:
            lease["released"] = True
        self.study.set_user_attr(LEASE_ATTR, lease)
        self.last_beat = time.monotonic()
