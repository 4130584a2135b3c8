"""Which software a process runs, and the check a worker makes against its driver's.

A worker on another node may have another Python, Ray, Keras or clonesweep installed, or pick
another Keras backend. Trials it ran would be recorded as if they came from the driver's
setup (and Ray itself breaks in odd ways across versions), so a worker whose versions differ
from the driver's refuses to start, with a message naming both.

Versions are read from the installed distributions' metadata (no import of Ray or Keras), so
the driver can call :func:`runtime_versions` before anything heavy is loaded.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata

from clonesweep.errors import SweepFailed

__all__ = ["VERSION_KEYS", "check_versions", "runtime_versions"]

#: What is compared: the distributions (by name) plus ``python`` and ``keras_backend``.
VERSION_KEYS = ("python", "ray", "keras", "keras_backend", "clonesweep")
_NOT_INSTALLED = "not installed"


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return _NOT_INSTALLED


def runtime_versions(keras_backend: str) -> tuple[tuple[str, str], ...]:
    """This process's versions as ``(name, version)`` pairs, in :data:`VERSION_KEYS` order.

    Example:
        >>> dict(runtime_versions("jax"))["keras_backend"]
        'jax'
    """
    found = {"python": platform.python_version(), "keras_backend": keras_backend}
    for name in ("ray", "keras", "clonesweep"):
        found[name] = _dist_version(name)
    return tuple((key, found[key]) for key in VERSION_KEYS)


def check_versions(expected: Iterable[tuple[str, str]],
                   actual: Iterable[tuple[str, str]], *, where: str = "this worker") -> None:
    """Raise SweepFailed if a version the driver sent differs from this process's.

    Only the names in ``expected`` are compared: a driver that sends none checks nothing.
    """
    have = dict(actual)
    diffs = [(key, want, have.get(key, _NOT_INSTALLED)) for key, want in expected
             if have.get(key, _NOT_INSTALLED) != want]
    if diffs:
        listed = "; ".join(f"{key}: driver {want}, worker {got}" for key, want, got in diffs)
        raise SweepFailed(
            f"version mismatch on {where}: {listed}. Install the same versions on every node "
            "(one container image for the whole cluster) and set the same KERAS_BACKEND")
