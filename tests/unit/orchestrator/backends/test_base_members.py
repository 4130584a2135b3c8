"""The member side of the backend contract, over both backends: kept outputs, fused groups."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from clonesweep.spec import load_sweep
from clonesweep.trials import Intermediate, TrialResult, TrialSpec, TrialState
from clonesweep.workers.member import FusedGroup

pytestmark = pytest.mark.integration


@pytest.fixture(params=["inprocess", "ray"])
def backend(request: pytest.FixtureRequest, sweep_file: Any,
            start_backend: Callable[..., Any]) -> Any:
    spec = load_sweep(sweep_file(epochs=1, limit=200))
    return start_backend(request.param, spec, keep_best=False, keep_members=True)


def results(backend: Any, count: int, deadline_s: float = 300) -> dict[int, TrialResult]:
    out: dict[int, TrialResult] = {}
    end = time.monotonic() + deadline_s
    while len(out) < count:
        assert time.monotonic() < end, "backend did not finish in time"
        for event in backend.poll(0.5):
            if isinstance(event, Intermediate):
                backend.answer(event, False)
            else:
                out[event.number] = event
    return out


def test_members_and_fused_groups_leave_their_outputs_once(backend: Any) -> None:
    backend.submit(TrialSpec(0, {}, seed=11))
    backend.submit_fused(FusedGroup(1, (TrialSpec(1, {}, seed=12), TrialSpec(2, {}, seed=13))))
    done = results(backend, 2)
    assert done[0].state is TrialState.COMPLETE and done[1].state is TrialState.COMPLETE
    assert "fused" in done[1].message
    alone = backend.fetch_member(0)
    assert alone is not None and alone.result is None and not alone.fused
    assert alone.model_bytes[:2] == b"PK" and alone.val_pred.shape == (len(alone.y_val), 10)
    for number in (1, 2):
        out = backend.fetch_member(number)
        assert out is not None and out.fused and out.result is not None
        assert out.result.number == number and out.result.state is TrialState.COMPLETE
        assert out.result.seeds and out.model_bytes[:2] == b"PK"
        assert np.array_equal(out.y_val, alone.y_val)
        assert backend.fetch_member(number) is None  # handed over once
    assert backend.fetch_member(0) is None
