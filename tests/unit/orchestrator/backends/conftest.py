"""``start_backend``: the backend contract's tests start either backend the same way."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clonesweep.orchestrator.backends.base import Backend, InProcessBackend
from clonesweep.orchestrator.model import base_model_config
from clonesweep.orchestrator.sweep import worker_job
from clonesweep.spec import SweepSpec


@pytest.fixture
def start_backend(request: pytest.FixtureRequest) -> Iterator[Callable[..., Backend]]:
    """``start_backend(kind, spec, **job_fields)``: a started backend with two slots,
    ``"inprocess"`` or ``"ray"`` (on the session's Ray, ``ray_cluster``), running the spec's
    worker job with ``job_fields`` replaced; shut down after the test."""
    started: list[Backend] = []

    def start(kind: str, spec: SweepSpec, **job_fields: Any) -> Backend:
        b: Backend
        if kind == "ray":
            request.getfixturevalue("ray_cluster")
            from clonesweep.orchestrator.backends.ray.backend import RayBackend

            b = RayBackend(resources=spec.sweep.resources)
        else:
            b = InProcessBackend()
        job = dataclasses.replace(worker_job(spec, base_model_config(spec)), **job_fields)
        b.start(job, 2)
        started.append(b)
        return b

    yield start
    for b in started:
        b.shutdown()
