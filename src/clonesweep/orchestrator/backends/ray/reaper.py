"""A watchdog that ends the embedded Ray's processes when the driver that started them dies.

Ray ties its GCS and raylet to the driver (they get SIGKILL when it dies), but its dashboard
and runtime-env agents, children of the raylet, outlive it: when their raylet dies unclean
they try to report that to the GCS, which is gone too, and wait there for 60 s (Ray 2.60's
``publish_error_to_driver`` timeout), one of them still listening. A driver killed by SIGKILL
runs no cleanup of its own, so a small process of ours does it.

The driver starts it right after ``ray.init`` with the processes ``ray.init`` started (the
driver's new children) and a pipe on its stdin. Every half second it records those
processes and their descendants; when the pipe closes (the driver exited, however it
died, or shut Ray down) it SIGKILLs every recorded process still alive, checked by start
time so that a reused pid is never hit, then exits. It only uses the standard library and
``/proc``: it runs as a script, importing nothing of clonesweep or Ray. Elsewhere than
Linux it is not started.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["Reaper", "children_of"]

_PROC = Path("/proc")
_TICK_S = 0.5


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time in clock ticks)`` of a live, non-zombie ``pid``."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def _parents() -> dict[int, int]:
    out = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                out[int(entry.name)] = stat[0]
    return out


def children_of(pid: int) -> set[int]:
    """The live direct children of ``pid`` (empty where there is no ``/proc``)."""
    if not _PROC.is_dir():
        return set()
    return {child for child, parent in _parents().items() if parent == pid}


def _tree(roots: Iterable[int]) -> set[int]:
    kids: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        kids.setdefault(parent, []).append(child)
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(kids.get(pid, []))
    return seen


def kill_trees(roots: set[int]) -> None:
    """SIGKILL ``roots`` and every process under them (what a failed ``ray.init`` left)."""
    for pid in _tree(roots):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


class Reaper:
    """The driver's handle on the watchdog process: :meth:`start` after ``ray.init``,
    :meth:`close` after ``ray.shutdown`` (the watchdog then ends whatever Ray left)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, roots: set[int]) -> None:
        """Watch ``roots`` (the processes ``ray.init`` started) and their descendants."""
        if not roots or not _PROC.is_dir() or self._process is not None:
            return
        # -I: the standard library only, whatever PYTHONPATH says; its own session, so a
        # Ctrl-C at the terminal reaches the driver and not the watchdog.
        self._process = subprocess.Popen(
            [sys.executable, "-I", __file__, *map(str, sorted(roots))],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def close(self) -> None:
        """Close the pipe: the watchdog kills what is left of Ray and exits."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def _watch(roots: set[int]) -> None:
    """Record the tree under ``roots`` until stdin closes, then kill what of it is alive."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seen: dict[int, int] = {}  # pid -> start time

    def same(pid: int) -> bool:  # alive, and not a reused pid
        stat = _stat(pid)
        return stat is not None and seen.get(pid, stat[1]) == stat[1]

    def record() -> None:
        for pid in _tree({pid for pid in roots | set(seen) if same(pid)}):
            stat = _stat(pid)
            if stat is not None:
                seen.setdefault(pid, stat[1])

    record()
    while True:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], _TICK_S)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
        record()
    for _ in range(20):  # a process may fork while being killed: until none is left
        alive = [pid for pid in seen if same(pid)]
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        record()
        select.select([], [], [], 0.1)


if __name__ == "__main__":
    _watch({int(arg) for arg in sys.argv[1:]})
