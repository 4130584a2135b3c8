"""One contract, every backend: the in-process twin and the real Ray backend."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from clonesweep.orchestrator.backends.base import Backend
from clonesweep.spec import load_sweep
from clonesweep.trials import FailReason, Intermediate, TrialResult, TrialSpec, TrialState

pytestmark = pytest.mark.integration


@pytest.fixture(params=["inprocess", "ray"])
def backend(request: pytest.FixtureRequest, sweep_file: Any,
            start_backend: Callable[..., Backend]) -> Backend:
    return start_backend(request.param, load_sweep(sweep_file(epochs=2)), await_pruning=True)


@pytest.fixture(params=["inprocess", "ray"])
def nowait_backend(request: pytest.FixtureRequest, sweep_file: Any,
                   start_backend: Callable[..., Backend]) -> Backend:
    return start_backend(request.param, load_sweep(sweep_file(epochs=2)), await_pruning=False)


def drive(backend: Backend, specs: list[TrialSpec], prune_at: int | None = None,
          deadline_s: float = 300) -> tuple[dict[int, TrialResult], list[Intermediate]]:
    """Submit every spec as slots free up; answer reports; return results and reports."""
    todo, results, reports = list(specs), {}, []
    end = time.monotonic() + deadline_s
    while len(results) < len(specs):
        assert time.monotonic() < end, "backend did not finish in time"
        while todo and backend.free_slots() > 0:
            backend.submit(todo.pop(0))
        for event in backend.poll(0.5):
            if isinstance(event, Intermediate):
                reports.append(event)
                backend.answer(event, prune_at is not None and event.step >= prune_at)
            else:
                assert event.number not in results, "a spec yielded two results"
                results[event.number] = event
    return results, reports


def test_every_spec_yields_one_result_with_its_reports(backend: Backend) -> None:
    specs = [TrialSpec(i, {"layers.hidden.units": 8 + i}, seed=i) for i in range(3)]
    results, reports = drive(backend, specs)
    assert sorted(results) == [0, 1, 2]
    for number, result in results.items():
        assert result.state is TrialState.COMPLETE, result.message
        assert result.value is not None and 0.0 <= result.value <= 1.0
        steps = [r.step for r in reports if r.number == number]
        assert steps == [0, 1]
        assert result.history["val_accuracy"][-1] == pytest.approx(result.value)
        assert result.config_hash and result.seeds and result.param_count > 0
        assert result.node and result.worker
    # The same params and seed twice would give the same hash; different units differ.
    assert len({r.config_hash for r in results.values()}) == 3


def test_reports_that_do_not_wait_all_arrive_and_cannot_prune(nowait_backend: Backend) -> None:
    """Without a pruner (await_pruning=False) a report may reach the driver after its
    trial's result, but it does reach it; an answer to prune changes nothing."""
    results, reports = drive(nowait_backend, [TrialSpec(3, {}, seed=3)], prune_at=0)
    assert results[3].state is TrialState.COMPLETE
    end = time.monotonic() + 60
    while len(reports) < 2 and time.monotonic() < end:
        for event in nowait_backend.poll(0.5):
            assert isinstance(event, Intermediate)
            reports.append(event)
            nowait_backend.answer(event, True)
    assert sorted(r.step for r in reports) == [0, 1]


def test_pruning_decision_reaches_the_worker(backend: Backend) -> None:
    results, reports = drive(backend, [TrialSpec(7, {}, seed=1)], prune_at=0)
    assert results[7].state is TrialState.PRUNED
    assert [r.step for r in reports] == [0]
    assert len(results[7].history["loss"]) == 1


def test_invalid_config_fails_the_trial_not_the_worker(backend: Backend) -> None:
    results, _ = drive(backend, [TrialSpec(1, {"layers.hidden.units": -4}, seed=0),
                                 TrialSpec(2, {}, seed=0)])
    assert results[1].state is TrialState.FAIL
    assert results[1].reason is FailReason.INVALID_CONFIG
    assert results[2].state is TrialState.COMPLETE


def test_best_model_comes_back_as_keras_bytes(backend: Backend) -> None:
    results, _ = drive(backend, [TrialSpec(3, {}, seed=3)])
    assert results[3].state is TrialState.COMPLETE
    data = backend.fetch_model(3)
    assert data is not None and data[:2] == b"PK"  # a .keras file is a zip archive


def test_an_error_the_runner_lets_out_fails_that_trial_and_the_worker_goes_on(
        sweep_file: Any, start_backend: Callable[..., Backend],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process worker thread used to end on it, and the driver waited forever (an
    ensemble of a two-output model did, before members kept several outputs). A Ray
    worker's call that raises comes back the same way (RayTaskError: user_error)."""
    from clonesweep.workers.runner import TrialRunner

    original = TrialRunner.run

    def run(self: TrialRunner, spec: TrialSpec, reporter: Any) -> TrialResult:
        if spec.number == 0:
            raise RuntimeError("an error no trial-level handler caught")
        return original(self, spec, reporter)

    monkeypatch.setattr(TrialRunner, "run", run)  # the runner runs in this process here
    backend = start_backend("inprocess", load_sweep(sweep_file(epochs=1)))
    results, _ = drive(backend, [TrialSpec(0, {}, seed=1), TrialSpec(1, {}, seed=2)])
    assert results[0].state is TrialState.FAIL and results[0].reason is FailReason.USER_ERROR
    assert "RuntimeError: an error no trial-level handler caught" in results[0].message
    assert results[1].state is TrialState.COMPLETE
