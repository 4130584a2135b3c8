"""A contender for a study's driver lease, run in its own process (spawn) by the lease test."""

from __future__ import annotations

import os
from typing import Any


def contend(url: str, name: str, locked: bool, barrier: Any, results: Any) -> None:
    """Open the study, wait for every contender, take the lease; report; stay alive (the
    winner's lease names a live pid) until every contender has reported."""
    from clonesweep.errors import SweepFailed
    from clonesweep.orchestrator.study.lease import Lease
    from clonesweep.orchestrator.study.storage import load_study

    study = load_study(name, url)
    study.user_attrs  # noqa: B018 - a first read, as a driver's open does, before the race
    barrier.wait()
    try:
        Lease(study, url if locked else None).acquire()
        results.put(("won", os.getpid()))
    except SweepFailed:
        results.put(("refused", os.getpid()))
    barrier.wait()
