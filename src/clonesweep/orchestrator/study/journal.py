"""A journal file written with one ``write`` + ``fsync`` per told trial (group commit).

Optuna's :class:`~optuna.storages.journal.JournalStorage` turns every storage call into one
log operation and hands it to a backend. Optuna's own file backend takes a lock file, opens
the file, writes and fsyncs for each operation: ~30 fsyncs per trial (params, ~15 user
attributes, the state). :class:`GroupCommitJournal` writes the same lines, in the same format
(one compact JSON object per line, so Optuna's ``JournalFileBackend``, optuna-dashboard and
``clonesweep status`` read the file as they read Optuna's), but holds a trial's operations in
memory and writes them together:

* an operation that finishes a trial (its state set to COMPLETE, PRUNED or FAIL) is written
  with every operation held before it, then fsync'd, before ``append_logs`` returns: a told
  trial is on disk before the driver counts or reports it;
* so is every study-level operation (the study created, its attributes, such as the driver
  lease) and every trial created from a template (``enqueue_trial``);
* anything else (a new trial's params and attributes, intermediate values) waits for the next
  of those, or for :meth:`GroupCommitJournal.commit`, which the sweep loop calls before it
  waits for workers. A crash loses at most the unfinished trials asked since the last commit,
  which a resume would re-queue anyway.

Reads are served from memory: the file is read once when the backend opens; afterwards only
lines other processes appended (the file grew past what this backend wrote) are read.

Thread safety and writers: one writer per file. clonesweep's driver lease
(:mod:`clonesweep.orchestrator.study.lease`) guarantees one driver per sweep; this backend takes no
lock file, so another process must not write the file while a driver runs (readers may).
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Container, Iterator
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from clonesweep.orchestrator._optuna import JournalOperation, journal_backend

__all__ = ["GroupCommitJournal", "commit", "journal_storage"]

_WAITING, _RUNNING = int(TrialState.WAITING), int(TrialState.RUNNING)
_FINISHED = frozenset({int(TrialState.COMPLETE), int(TrialState.PRUNED), int(TrialState.FAIL)})
# Operations that must not wait: the study's own records (its creation, attributes such as
# the driver lease) and a trial that is created whole (enqueue_trial, a template).
_AT_ONCE = frozenset({int(JournalOperation.CREATE_STUDY), int(JournalOperation.DELETE_STUDY),
                      int(JournalOperation.SET_STUDY_USER_ATTR),
                      int(JournalOperation.SET_STUDY_SYSTEM_ATTR)})


def _durable(log: dict[str, Any]) -> bool:
    """Whether ``log`` must be on disk before ``append_logs`` returns."""
    op = int(log["op_code"])
    if op in _AT_ONCE:
        return True
    if op == JournalOperation.SET_TRIAL_STATE_VALUES:
        return int(log["state"]) in _FINISHED
    return op == JournalOperation.CREATE_TRIAL and "state" in log


class GroupCommitJournal(BaseJournalBackend):
    """An Optuna journal backend on one file, fsync'd once per finished trial.

    Args:
        path: The journal file; created (with its folder) if missing. A last line cut short
            by a crash is dropped when the file is opened.

    Example:
        >>> storage = optuna.storages.JournalStorage(GroupCommitJournal("runs/s/study.log"))
        >>> study = optuna.create_study(storage=storage)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        self._file = _File(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644))
        # What is held is written and the file closed when this backend is collected or, at
        # the latest, when the interpreter exits (before its modules are torn down; a
        # __del__ run then could find `os` gone).
        self._closer = weakref.finalize(self, self._file.close)
        if new:
            self._sync_folder()
        # Logs not yet handed to the JournalStorage (it reads each log once, in order).
        self._unread: list[dict[str, Any]] = []
        self._unread_from = 0  # the log number of _unread[0]
        # Trials enqueued (WAITING) and not yet popped, over every log seen: lets `ask` skip
        # its scan of all trials for a waiting one (O(trials) per ask) when there is none.
        self.waiting = 0
        self._read_new_lines(opening=True)

    # -- BaseJournalBackend ----------------------------------------------------------------
    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        if log_number_from < self._unread_from:
            # A second reader on this backend (not the driver's storage): read the file.
            self.commit()
            yield from _read_file(self.path, log_number_from)
            return
        if not self._file.pending:
            self._read_new_lines()  # another process appended (never while a driver runs)
        skip = log_number_from - self._unread_from
        out, self._unread = self._unread[skip:], []
        self._unread_from = log_number_from + len(out)
        yield from out

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._count_waiting(logs)
        self._unread.extend(logs)
        self._file.pending.extend(json.dumps(log, separators=(",", ":")).encode() + b"\n"
                             for log in logs)
        if any(_durable(log) for log in logs):
            self.commit()

    # -- group commit ----------------------------------------------------------------------
    def commit(self) -> None:
        """Write every held operation with one ``write`` and ``fsync`` (nothing if none)."""
        self._file.commit()

    def close(self) -> None:
        """Commit what is held and close the file (idempotent)."""
        self._closer()

    # -- reading ---------------------------------------------------------------------------
    def _read_new_lines(self, opening: bool = False) -> None:
        file = self._file
        size = os.fstat(file.fd).st_size
        if size <= file.offset:
            return
        data = os.pread(file.fd, size - file.offset, file.offset)
        end = data.rfind(b"\n") + 1
        if opening and end < len(data):
            # A line cut short by a crash: the first commit drops it, so that appends start on
            # a fresh line (Optuna's reader refuses a broken line in the middle). Not now: a
            # reader may be looking at a running driver's write.
            file.cut_at = end
        logs = [json.loads(line) for line in data[:end].splitlines()]
        self._count_waiting(logs)
        self._unread.extend(logs)
        file.offset += end

    def _count_waiting(self, logs: list[dict[str, Any]]) -> None:
        for log in logs:
            op = log["op_code"]
            if op == JournalOperation.CREATE_TRIAL and log.get("state") == _WAITING:
                self.waiting += 1
            elif op == JournalOperation.SET_TRIAL_STATE_VALUES and log["state"] == _RUNNING:
                self.waiting -= 1  # Optuna sets RUNNING only when it pops a waiting trial

    def _sync_folder(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _File:
    """The journal's open file and the lines held for it; the backend's finalizer closes it
    (it must not refer to the backend, or the backend would never be collected)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending: list[bytes] = []  # encoded lines not yet written
        self.offset = 0  # bytes of the file the backend has read or written
        self.cut_at: int | None = None  # a torn last line starts here

    def commit(self) -> None:
        if not self.pending:
            return
        if self.cut_at is not None:
            os.ftruncate(self.fd, self.cut_at)
            self.cut_at = None
        data = b"".join(self.pending)
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        os.fsync(self.fd)
        self.offset += len(data)
        self.pending = []

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            self.commit()
        finally:
            os.close(self.fd)
            self.fd = -1


def _read_file(path: Path, log_number_from: int) -> Iterator[dict[str, Any]]:
    with path.open("rb") as fh:
        for number, line in enumerate(fh):
            if not line.endswith(b"\n"):
                return
            if number >= log_number_from:
                yield json.loads(line)


class _Storage(JournalStorage):
    """Optuna's JournalStorage, minus the scan of every trial that each ``ask`` makes for a
    waiting (enqueued) trial when the journal holds none."""

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        backend = journal_backend(self)
        if (isinstance(states, tuple) and states == (TrialState.WAITING,)
                and isinstance(backend, GroupCommitJournal) and backend.waiting <= 0):
            self.get_study_name_from_id(study_id)  # KeyError for an unknown study, as before
            return []
        return super().get_all_trials(study_id, deepcopy, states)


def journal_storage(path: str | os.PathLike[str]) -> JournalStorage:
    """An Optuna storage on a :class:`GroupCommitJournal` at ``path``."""
    return _Storage(GroupCommitJournal(path))


def commit(storage: Any) -> None:
    """Write what ``storage`` holds back, if it is a group-commit journal; else nothing."""
    backend = journal_backend(storage)
    if isinstance(backend, GroupCommitJournal):
        backend.commit()
