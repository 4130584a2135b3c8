"""Ray's own messages on the driver go to a log file, not into the results table.

A Ray driver prints what the cluster reports to it (a node's raylet terminated, with the last
20 lines of its log; a worker killed; autoscaler events) from Ray's background threads,
straight to ``sys.stdout`` with colour codes, whatever stdout is. In a sweep that lands in the
middle of the results table, or in the JSON on stdout. Ray offers no public switch that sends
them elsewhere (``log_to_driver=False`` silences the workers' output, not these), so while a
sweep runs, :func:`ray_messages_to` stands in for ``sys.stdout`` and ``sys.stderr``: what a
thread of Ray's writes (their names start with ``ray_``: ``ray_listen_error_messages``,
``ray_print_logs`` in Ray 2.60) goes to the log file without colour codes, everything else
goes where it went before. Records of Ray's Python loggers (``ray.*``) go to the same file.
If Ray renames its threads, its messages reach the terminal again, as before, and
tests/scenarios/faults/test_node_loss.py fails.

The file is opened on Ray's first message, so a sweep that Ray says nothing about leaves no
file; lines that come before the run folder exists wait in memory and are written once it
does (or to stderr, if it never comes).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["RAY_LOG", "ray_messages_to"]

#: The log file's name in the run folder.
RAY_LOG = "ray.log"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RAY_THREAD_PREFIX = "ray_"


class _Sink:
    """The log file, opened on the first write once its folder exists; thread safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._pending: list[str] = []

    def write(self, text: str) -> None:
        text = _ANSI.sub("", text)
        with self._lock:
            if self._file is None and self.path.parent.is_dir():
                self._file = self.path.open("a", encoding="utf-8")
                self._file.writelines(self._pending)
                self._pending = []
            if self._file is None:
                self._pending.append(text)
            else:
                self._file.write(text)
                self._file.flush()

    def close(self, fallback: TextIO) -> None:
        with self._lock:
            if self._file is None and self._pending and self.path.parent.is_dir():
                self._file = self.path.open("a", encoding="utf-8")
                self._file.writelines(self._pending)
            elif self._pending:
                fallback.writelines(self._pending)
            self._pending = []
            if self._file is not None:
                self._file.close()
                self._file = None


class _Diverter(io.TextIOBase):
    """A text stream that sends Ray's threads' writes to ``sink``, the rest to ``target``."""

    def __init__(self, target: TextIO, sink: _Sink) -> None:
        super().__init__()
        self.target, self.sink = target, sink

    def write(self, text: str) -> int:
        if threading.current_thread().name.startswith(_RAY_THREAD_PREFIX):
            self.sink.write(text)
        else:
            self.target.write(text)
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


class _SinkHandler(logging.Handler):
    def __init__(self, sink: _Sink) -> None:
        super().__init__()
        self.sink = sink
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def ray_messages_to(path: Path) -> Iterator[None]:
    """While the block runs, Ray's messages on this driver go to ``path`` (see the module).

    Example::

        with ray_messages_to(run_folder / RAY_LOG):
            run_sweep(...)
    """
    sink = _Sink(path)
    stdout, stderr = sys.stdout, sys.stderr
    ray_logger = logging.getLogger("ray")
    handler, propagate = _SinkHandler(sink), ray_logger.propagate
    sys.stdout, sys.stderr = _Diverter(stdout, sink), _Diverter(stderr, sink)
    ray_logger.addHandler(handler)
    ray_logger.propagate = False
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        ray_logger.removeHandler(handler)
        ray_logger.propagate = propagate
        sink.close(stderr)
