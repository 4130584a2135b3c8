"""`clonesweep run` on a real pseudo-terminal of 80x24, its bytes played on an emulator."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

pyte = pytest.importorskip("pyte")


def test_run_on_an_80_column_terminal(sweep_file: Any, tmp_path: Path) -> None:
    path = sweep_file(trials=2, epochs=2)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command line, as a user would start it
        os.chdir(tmp_path)
        os.execvp(sys.executable, [sys.executable, "-m", "clonesweep", "run", str(path),
                                   "--backend", "inprocess"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    screen = pyte.Screen(80, 24)
    stream = pyte.ByteStream(screen)
    running_seen = False
    while True:
        try:
            select.select([fd], [], [], 300)
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        stream.feed(data)
        shown = [line for line in screen.display if line.strip()]
        running_seen |= any(line.split()[1:2] == ["running"] for line in shown)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "\n".join(screen.display)
    shown = [line.rstrip() for line in screen.display if line.strip()]
    assert running_seen  # a row per running trial was drawn while it trained
    assert sum(line.split()[1:2] == ["complete"] for line in shown) == 2, shown
    # Nothing stale: no running row, no status line, no library banner left on the screen.
    assert not any(line.split()[1:2] == ["running"] or line.startswith("done 0/")
                   for line in shown), shown
    assert not any("oneDNN" in line or "absl" in line or "[I " in line for line in shown)
    assert any(line.startswith("done in ") for line in shown)
    assert any(line.startswith("  clonesweep report") for line in shown), shown
