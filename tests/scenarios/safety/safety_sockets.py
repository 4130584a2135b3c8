"""The TCP sockets processes really listen on, read from /proc (no psutil needed)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp{,6}


@dataclass(frozen=True)
class Listening:
    pid: int
    name: str
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        ip = ipaddress.ip_address(self.address)
        mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
        return (mapped or ip).is_loopback


def _decode(hex_address: str, family: int) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # /proc prints each 32-bit word in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, words), int(port, 16)


def _listening_inodes() -> dict[int, tuple[str, int]]:
    found = {}
    for family, table in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                parts = line.split()
                if parts[3] == _LISTEN:
                    found[int(parts[9])] = _decode(parts[1], family)
    return found


def listening(pids: list[int]) -> list[Listening]:
    """Every TCP socket in LISTEN state held by one of ``pids``."""
    inodes = _listening_inodes()
    out = []
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    target = os.readlink(fd_dir / fd)
                    if target.startswith("socket:["):
                        inode = int(target[len("socket:["):-1])
                        if inode in inodes:
                            address, port = inodes[inode]
                            out.append(Listening(pid, os.path.basename(name), address, port))
    return out


def _stat(pid: int) -> tuple[int, str, int] | None:
    """``(ppid, state, start time)`` of ``pid`` from /proc/PID/stat; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live process under ``root`` in the process tree (``root`` included), with its
    start time (so that a pid reused later is not taken for it)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] != "Z":
                children.setdefault(stat[0], []).append((int(entry.name), stat[2]))
    found: dict[int, int] = {}
    stat = _stat(root)
    if stat is not None and stat[1] != "Z":
        found[root] = stat[2]
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot); None if it is gone."""
    stat = _stat(pid)
    return None if stat is None else stat[2]


def alive(pid: int, started: int) -> bool:
    """``pid`` still runs the process that started at ``started`` (a zombie is gone)."""
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z" and stat[2] == started
