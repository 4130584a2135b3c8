"""A journal file written in Optuna's format, fsync'd once per told trial (group commit).

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
* an operation that creates a trial is written at once (no fsync), so that its place in the
  file, which is its id for every reader, is the place it took in this process;
* anything else (a new trial's params and attributes, intermediate values) waits for the next
  of those, or for :meth:`GroupCommitJournal.commit`, which the sweep loop calls before it
  waits for workers. A crash of the machine loses at most the unfinished trials asked since
  the last fsync, which a resume would re-queue anyway; a killed driver loses only what it
  held unwritten.

Reads are served from memory: the file is read once when the backend opens; afterwards only
lines other processes appended (the file grew past what this backend wrote) are read.

Writers: the sweep's driver is its study's only writer (the driver lease,
:mod:`clonesweep.orchestrator.study.lease`), but other clonesweep processes write the same file
now and then: a second driver that is refused, an ensemble in a study of its own. Each write
takes a POSIX lock on the file and first reads what others appended, so that every process
replays the file to the same study and trial ids. Optuna's own backend (optuna-dashboard) does
not take that lock; its lines are read back too, and since it creates no trial in a study a
driver runs, ids stay the same. Not thread-safe: one backend per thread.

About 300 lines: one storage backend, its writes and reads sharing the file offset and lock.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import sys
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


def _ordered(log: dict[str, Any]) -> bool:
    """Whether ``log`` is written at once, after what other processes appended: it must be
    on disk now (:func:`_durable`), or it creates a study or trial, whose id is its place
    among the file's creations (so every process replays it to the same id)."""
    op = int(log["op_code"])
    return op in (JournalOperation.CREATE_STUDY, JournalOperation.CREATE_TRIAL) or _durable(log)


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
            by a crash is dropped by the first write after the file is opened.

    Example:
        >>> storage = optuna.storages.JournalStorage(GroupCommitJournal("runs/s/study.log"))
        >>> study = optuna.create_study(storage=storage)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        # What is held is written and the file closed at the latest when the interpreter
        # exits, before its modules are torn down (a __del__ run then could find `os` gone).
        atexit.register(_close_at_exit, weakref.ref(self))
        if new:
            self._sync_folder()
        # Logs not yet handed to the JournalStorage (it reads each log once, in order).
        self._unread: list[dict[str, Any]] = []
        self._unread_from = 0  # the log number of _unread[0]
        self._pending: list[bytes] = []  # encoded lines not yet written
        self._unsynced = False  # written, not yet fsync'd
        self._offset = 0  # bytes of the file this backend has read or written
        self._torn: tuple[int, int] | None = None  # (start, file size) of a torn last line
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
        self._read_new_lines()  # what other processes appended (a reader, or a dashboard)
        skip = log_number_from - self._unread_from
        out, self._unread = self._unread[skip:], []
        self._unread_from = log_number_from + len(out)
        yield from out

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        lines = [json.dumps(log, separators=(",", ":")).encode() + b"\n" for log in logs]
        if not any(_ordered(log) for log in logs):
            self._count_waiting(logs)
            self._unread.extend(logs)
            self._pending.extend(lines)
            return
        with self._locked():
            # Whatever another process appended goes before these logs, in memory as in the
            # file: a trial's or study's id is its place among the creations in the file.
            self._read_new_lines()
            self._count_waiting(logs)
            self._unread.extend(logs)
            self._pending.extend(lines)
            self._write()
        if any(_durable(log) for log in logs):
            self._sync()

    # -- group commit ----------------------------------------------------------------------
    def commit(self) -> None:
        """Write every held operation with one ``write`` and ``fsync`` (nothing if none)."""
        if self._pending:
            with self._locked():
                self._read_new_lines()
                self._write()
        self._sync()

    def close(self) -> None:
        """Commit what is held and close the file (idempotent)."""
        if self._fd < 0:
            return
        self.commit()
        os.close(self._fd)
        self._fd = -1

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0 and not sys.is_finalizing():
            try:
                self.commit()
            finally:
                os.close(self._fd)
                self._fd = -1

    # -- writing (under the lock) ------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """A POSIX record lock on the file, held while appending: clonesweep processes on the
        same journal (a driver, a refused second driver, an ensemble) append in turn, each
        after reading what the others wrote. It does not meet the ``flock`` that
        :mod:`~clonesweep.orchestrator.study.storagelock` takes on the same file (Linux keeps
        the two kinds apart); Optuna's own backend locks with a ``.lock`` file instead."""
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _write(self) -> None:
        if self._torn is not None:
            start, size = self._torn
            self._torn = None
            if os.fstat(self._fd).st_size == size:
                os.ftruncate(self._fd, start)
        data = b"".join(self._pending)
        self._pending = []
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        end = os.lseek(self._fd, 0, os.SEEK_CUR)  # O_APPEND: where this write ended
        if end - len(data) > self._offset:
            # A writer that does not take the lock (Optuna's own backend: a dashboard's
            # note) appended between the read and this write; read its lines now.
            foreign = os.pread(self._fd, end - len(data) - self._offset, self._offset)
            logs = [json.loads(line) for line in foreign.splitlines()]
            self._count_waiting(logs)
            self._unread.extend(logs)
        self._offset = end
        self._unsynced = True

    def _sync(self) -> None:
        if self._unsynced:
            os.fsync(self._fd)
            self._unsynced = False

    # -- reading ---------------------------------------------------------------------------
    def _read_new_lines(self, opening: bool = False) -> None:
        size = os.fstat(self._fd).st_size
        if size <= self._offset or (self._torn is not None and size == self._torn[1]):
            return
        data = os.pread(self._fd, size - self._offset, self._offset)
        if self._torn is not None and not opening:
            # The file grew past a line seen cut short: a write that was still under way (the
            # line is whole now), or a crash's torn line with another process's lines after
            # it (skipped, as Optuna's reader would fail on it).
            self._torn = None
            cut = data.find(b"\n") + 1
            if cut and not _whole(data[:cut]):
                data, self._offset = data[cut:], self._offset + cut
        end = data.rfind(b"\n") + 1
        if opening and end < len(data):
            # A line cut short by a crash: the first write drops it, so that appends start on
            # a fresh line (Optuna's reader refuses a broken line in the middle). Not now: a
            # reader may be looking at a running driver's write.
            self._torn = (self._offset + end, size)
        logs = [json.loads(line) for line in data[:end].splitlines()]
        self._count_waiting(logs)
        self._unread.extend(logs)
        self._offset += end

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


def _whole(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


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


def _close_at_exit(ref: weakref.ref[GroupCommitJournal]) -> None:
    """At interpreter exit: commit and close a journal backend still alive."""
    backend = ref()
    if backend is not None:
        backend.close()
