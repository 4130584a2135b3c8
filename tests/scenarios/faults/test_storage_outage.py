"""Fault 11: the study's PostgreSQL server stops mid-sweep and comes back.

The test's own server (not the session's) is paused while trials train and resumed a few
seconds later: the driver holds the finished trials' results, asks for nothing new while
they wait, writes them in order once the server answers again, and no trial is failed for
it. The sweep meets its budget with every trial complete.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from faults_support import assert_invariants

import cluster_support
from clonesweep.orchestrator import base_model_config, run_sweep
from clonesweep.orchestrator.backends.base import InProcessBackend
from clonesweep.orchestrator.study.storage import load_study, storage_url
from clonesweep.orchestrator.sweep import NullProgress
from clonesweep.spec import load_sweep
from clonesweep.spec.settings import with_password
from pgserver import PostgresServer, PostgresUnavailable

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    server = cluster_support.own_postgres()
    try:
        server.start()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


class Outage(NullProgress):
    """Pauses the server when the second trial starts; resumes it after ``down_s``."""

    def __init__(self, server: PostgresServer, down_s: float) -> None:
        self.server, self.down_s = server, down_s
        self.started = 0
        self.thread: threading.Thread | None = None

    def on_trial_start(self, spec: Any) -> None:
        self.started += 1
        if self.started == 2:
            self.server.pause()
            self.thread = threading.Thread(target=self._back_later, daemon=True)
            self.thread.start()

    def _back_later(self) -> None:
        time.sleep(self.down_s)
        self.server.resume()


def test_results_are_held_while_storage_is_down(own_postgres: PostgresServer,
                                                sweep_file: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="clonesweep.orchestrator.study.outbox")
    # The file names the server without its password (a URL holding one is refused); the
    # password joins the driver's URL as the CLI's --storage-password-file would add it.
    bare = own_postgres.url.replace(f":{own_postgres.password}@", "@")
    path = sweep_file(name="outage", trials=4, epochs=2, sweep_extra=f"\n  storage: {bare}")
    spec = load_sweep(path)
    spec = dataclasses.replace(spec, sweep=dataclasses.replace(
        spec.sweep, storage=with_password(bare, own_postgres.password, source="test")))
    outage = Outage(own_postgres, down_s=8.0)
    outcome = run_sweep(spec, base_model_config(spec), InProcessBackend(), outage)
    assert outage.thread is not None
    outage.thread.join(timeout=60)
    got = load_study("outage", storage_url(spec)).get_trials()
    assert_invariants(got, budget=4)
    assert [t.state for t in got] == [optuna.trial.TrialState.COMPLETE] * 4
    assert outcome.counts.complete == 4 and outcome.failures == {}
    assert [t.number for t in got] == [0, 1, 2, 3]
    # The outage was met: results were held, then written.
    assert "storage unreachable; holding" in caplog.text
    assert "storage is back" in caplog.text
