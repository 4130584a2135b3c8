"""Time a command from its start to its exit, the same way for every tool of the benchmark.

The start is taken just before the process is created and handed to it as ``$BENCH_T0``
(epoch seconds), so a script can time its own events (the first epoch's end) from the same
instant; the end is the process's exit, its interpreter's shutdown included.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Timed:
    """A finished command: exit code, seconds from start to exit, its stdout lines."""

    rc: int
    wall_s: float
    lines: list[str]


def timed(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
          stderr: Path | None = None, on_line: Callable[[float, str], None] | None = None,
          timeout: float = 3000.0) -> Timed:
    """Run ``cmd``; ``on_line(seconds since start, line)`` as each stdout line arrives."""
    environment = dict(os.environ if env is None else env)
    lines: list[str] = []
    with open(stderr or os.devnull, "w") as err:
        start = time.time()
        environment["BENCH_T0"] = f"{start:.6f}"
        proc = subprocess.Popen(cmd, cwd=cwd, env=environment, stdout=subprocess.PIPE,
                                stderr=err, text=True)
        assert proc.stdout is not None
        for text in proc.stdout:
            if on_line is not None:
                on_line(time.time() - start, text)
            lines.append(text)
        rc = proc.wait(timeout=timeout)
        wall = time.time() - start
    return Timed(rc, wall, lines)
