"""The one loop's logic on the scripted backend (no Keras, no Ray): retries, budget, abort,
pruning, interrupts and resume, for sweeps and ensembles. Real SQLite studies, milliseconds
per sweep; the real-Keras scenarios stay in tests/scenarios/faults and
tests/scenarios/integration."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import optuna
import pytest

from clonesweep.errors import SweepFailed
from clonesweep.orchestrator import base_model_config
from clonesweep.orchestrator.ensemble.run import EnsembleRequest, run_ensemble
from clonesweep.orchestrator.study.resume import counted
from clonesweep.orchestrator.study.storage import commit, load_study, storage_url
from clonesweep.orchestrator.sweep import RunOptions, SweepOutcome, run_sweep
from clonesweep.orchestrator.testing import Complete, Fail, FakeBackend, Hang
from clonesweep.spec import SweepSpec, load_sweep
from clonesweep.trials import FailReason
from tests_support import write_sweep

S = optuna.trial.TrialState
# What every finished trial stores, sweep trial or ensemble member (records.trial_attributes).
RECORDED = ("state", "seeds", "config_hash", "param_count", "node", "worker", "attempt",
            "build_s", "train_s", "eval_s", "history", "environment", "data_fingerprint",
            "engine")


def _spec(tmp_path: Path, sweep_extra: str = "", sqlite: bool = False,
          **kwargs: Any) -> SweepSpec:
    """A sweep file's spec; its study in the group-commit journal (a creating SQLite file
    costs ~2 s here) unless ``sqlite``."""
    if not sqlite:
        sweep_extra += f"\n  storage: journal://{tmp_path / 'study.journal'}"
    return load_sweep(write_sweep(tmp_path, sweep_extra=sweep_extra, **kwargs))


def _sweep(spec: SweepSpec, backend: FakeBackend, **options: Any) -> SweepOutcome:
    return run_sweep(spec, base_model_config(spec), backend, options=RunOptions(**options))


def _trials(spec: SweepSpec, name: str | None = None) -> list[optuna.trial.FrozenTrial]:
    return load_study(name or spec.name, storage_url(spec)).get_trials()


def test_a_sweep_runs_to_its_budget_and_records_every_trial(tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=5, parallel=2, sqlite=True)
    backend = FakeBackend({n: Complete(value=0.1 * (n + 1)) for n in range(5)})
    outcome = _sweep(spec, backend)
    trials = _trials(spec)
    assert [t.state for t in trials] == [S.COMPLETE] * 5
    assert outcome.counts.complete == 5 and outcome.best is not None
    assert outcome.best.number == 4 and outcome.best.value == pytest.approx(0.5)
    assert backend.started is not None and backend.started[1] == 2 and backend.shut_down
    for t in trials:
        assert all(key in t.user_attrs for key in RECORDED), t.user_attrs.keys()
        assert t.intermediate_values == dict(enumerate(t.user_attrs["history"]["val_accuracy"]))
        record = json.loads((spec.run_folder / "trials" / f"{t.number:05d}.json").read_text())
        assert record["seed"] == t.user_attrs["seed"] and record["engine"] == "fake"
    summary = json.loads((spec.run_folder / "summary.json").read_text())
    assert summary["complete"] == 5 and summary["best"]["number"] == 4
    assert (spec.run_folder / "best.keras").read_bytes() == b"fake keras model"


def test_only_retryable_reasons_are_retried_and_a_retry_counts_once(tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=4, parallel=2, sweep_extra="\n  retries: 2")
    backend = FakeBackend({
        0: [Fail(FailReason.WORKER_DIED), Complete()],      # retried, then completes
        1: Fail(FailReason.USER_ERROR),                      # never retried
        2: Fail(FailReason.OOM),                             # retried until retries run out
        3: Fail(FailReason.GPU_OOM),                         # not retryable
    })
    outcome = _sweep(spec, backend)
    attempts = [(s.number, s.attempt) for s in backend.submitted]
    assert sorted(attempts) == [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2), (3, 0)]
    trials = _trials(spec)
    assert len(trials) == 4 and outcome.counts.finished == 4 and outcome.counts.retried == 3
    assert trials[0].state is S.COMPLETE and trials[0].user_attrs["attempt"] == 1
    assert [t.user_attrs.get("fail_reason") for t in trials[1:]] == ["user_error", "oom",
                                                                      "gpu_oom"]
    assert outcome.failures == {"user_error": 1, "oom": 1, "gpu_oom": 1}


def test_repeated_user_errors_stop_the_sweep(tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=10)
    backend = FakeBackend({n: Fail(FailReason.USER_ERROR, f"broken loader {n}")
                           for n in range(10)})
    with pytest.raises(SweepFailed, match=r"3 trials failed in a row.*broken loader 2"):
        _sweep(spec, backend)
    assert len(_trials(spec)) == 3


def test_a_trial_that_completes_breaks_the_run_of_user_errors(tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=5)
    script = {0: Fail(FailReason.USER_ERROR), 1: Fail(FailReason.USER_ERROR), 2: Complete(),
              3: Fail(FailReason.USER_ERROR), 4: Fail(FailReason.USER_ERROR)}
    outcome = _sweep(spec, FakeBackend(script))
    assert outcome.counts.finished == 5 and outcome.counts.failed == 4


def test_intermediate_values_prune_through_the_pruner(tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=3,
                 sweep_extra="\n  pruner: {name: threshold, lower: 0.3}")
    script = {0: Complete(value=0.9, epochs=3), 1: Complete(value=0.1, epochs=3),
              2: Complete(value=0.9, epochs=3)}
    outcome = _sweep(spec, FakeBackend(script))
    trials = _trials(spec)
    assert [t.state for t in trials] == [S.COMPLETE, S.PRUNED, S.COMPLETE]
    assert outcome.counts.pruned == 1 and trials[1].intermediate_values == {0: pytest.approx(
        0.1 / 3)}


def _interrupt_once(backend: FakeBackend) -> None:
    if len(backend.submitted) >= 2 and not getattr(backend, "signalled", False):
        backend.signalled = True  # type: ignore[attr-defined]
        os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupt_requeues_running_trials_and_a_resume_ends_on_the_budget(
        tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=4, parallel=2)
    hung = FakeBackend({0: Hang(), 1: Hang()}, on_poll=_interrupt_once)
    with pytest.raises(KeyboardInterrupt):
        _sweep(spec, hung, grace=0.0)
    first = _trials(spec)
    cut = [t for t in first if t.state is S.FAIL]
    assert [t.user_attrs["fail_reason"] for t in cut] == ["interrupted", "interrupted"]
    assert not any(counted(t) for t in first)
    assert sum(t.state is S.WAITING for t in first) == 2  # the params, re-queued

    outcome = _sweep(spec, FakeBackend())
    trials = _trials(spec)
    assert outcome.already_finished == 0 and outcome.counts.finished == 4
    assert sum(counted(t) for t in trials) == 4
    reruns = {t.user_attrs["requeued_from"]: t for t in trials if "requeued_from" in t.user_attrs}
    assert sorted(reruns) == [0, 1]
    for number, rerun in reruns.items():
        assert rerun.state is S.COMPLETE
        assert rerun.user_attrs["seed"] == trials[number].user_attrs["seed"]
        assert rerun.params == trials[number].params


def test_a_retryable_failure_while_draining_is_requeued_not_retried(tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=2, parallel=2, sweep_extra="\n  retries: 3")
    backend = FakeBackend({0: Fail(FailReason.WORKER_DIED), 1: Complete()},
                          on_poll=_interrupt_once)
    with pytest.raises(KeyboardInterrupt):
        _sweep(spec, backend, grace=60.0)  # drains: trial 1 completes, trial 0 re-queued
    trials = _trials(spec)
    assert [s.number for s in backend.submitted] == [0, 1]
    assert trials[0].user_attrs["fail_reason"] == "interrupted"
    assert trials[1].state is S.COMPLETE


def test_a_resume_recovers_what_a_dead_driver_left_running(tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=2)
    _sweep(spec, FakeBackend())
    study = load_study(spec.name, storage_url(spec))
    orphan = study.ask()  # a driver that died after asking trial 2
    orphan.set_user_attr("seed", 1234)
    commit(study)  # the group-commit journal writes at commit
    bigger = _spec(tmp_path, trials=3)
    outcome = _sweep(bigger, FakeBackend())
    trials = _trials(spec)
    assert trials[2].state is S.FAIL and trials[2].user_attrs["fail_reason"] == "driver_died"
    assert outcome.already_finished == 2 and outcome.counts.finished == 1
    assert trials[3].user_attrs["requeued_from"] == 2 and trials[3].user_attrs["seed"] == 1234
    assert sum(counted(t) for t in trials) == 3


def test_an_ensemble_retries_members_and_records_them_like_sweep_trials(tmp_path: Path) -> None:
    spec = _spec(tmp_path, parallel=2, sweep_extra="\n  retries: 1")
    backend = FakeBackend({1: [Fail(FailReason.WORKER_DIED), Complete(value=0.7)],
                           2: Fail(FailReason.NAN_LOSS)})
    seen: list[tuple[int, bool]] = []
    outcome = run_ensemble(spec, base_model_config(spec), backend,
                           EnsembleRequest(members=4, seed=5),
                           on_member=lambda m, retried: seen.append((m.index, retried)))
    assert outcome.retried == 1 and (1, True) in seen
    assert [m.index for m in outcome.held] == [0, 1, 3]
    trials = _trials(spec, outcome.study)
    assert [t.state for t in trials] == [S.COMPLETE, S.COMPLETE, S.FAIL, S.COMPLETE]
    assert trials[2].user_attrs["fail_reason"] == "nan_loss"
    for t in trials:
        assert all(key in t.user_attrs for key in RECORDED), t.user_attrs.keys()
        assert t.user_attrs["member_index"] == t.number and t.user_attrs["fused"] is False


def test_a_fused_ensemble_retries_a_group_as_a_whole(tmp_path: Path) -> None:
    spec = _spec(tmp_path, parallel=2, sweep_extra="\n  retries: 1")
    backend = FakeBackend({2: [Fail(FailReason.WORKER_DIED), Complete(value=0.8)]})
    outcome = run_ensemble(spec, base_model_config(spec), backend,
                           EnsembleRequest(members=4, seed=5, fused=True))
    assert outcome.fused and outcome.fused_note == "" and outcome.retried == 1
    # Two groups of two; the second (members 2 and 3) ran twice.
    assert [(s.number, s.attempt) for s in backend.submitted] == [
        (0, 0), (1, 0), (2, 0), (3, 0), (2, 1), (3, 1)]
    assert len(outcome.held) == 4
    trials = _trials(spec, outcome.study)
    assert all(t.user_attrs["fused"] for t in trials)
    assert [t.user_attrs["attempt"] for t in trials] == [0, 0, 1, 1]


def test_an_ensemble_that_stops_records_its_unfinished_members(tmp_path: Path) -> None:
    spec = _spec(tmp_path, parallel=2)

    def crash(backend: FakeBackend) -> None:
        if backend.submitted:
            raise RuntimeError("the driver crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        run_ensemble(spec, base_model_config(spec), FakeBackend(on_poll=crash),
                     EnsembleRequest(members=3, seed=5))
    trials = _trials(spec, f"{spec.name}-ensemble")
    assert len(trials) == 3 and all(t.state is S.FAIL for t in trials)
    assert {t.user_attrs["fail_reason"] for t in trials} == {"interrupted"}


def test_a_group_its_worker_could_not_fuse_is_noted_by_type_not_by_message(
        tmp_path: Path) -> None:
    spec = _spec(tmp_path, parallel=2)
    backend = FakeBackend(unfusable="a layer the stacked engine does not cover")
    outcome = run_ensemble(spec, base_model_config(spec), backend,
                           EnsembleRequest(members=2, seed=5, fused=True))
    assert not outcome.fused and "does not cover" in outcome.fused_note
    assert len(outcome.held) == 2
    assert not any(t.user_attrs["fused"] for t in _trials(spec, outcome.study))


def test_a_resumed_sampler_does_not_replay_the_first_runs_draws(tmp_path: Path) -> None:
    _sweep(_spec(tmp_path, trials=2), FakeBackend())
    spec = _spec(tmp_path, trials=4)
    _sweep(spec, FakeBackend())
    rates = [t.params["optimizer.learning_rate"] for t in _trials(spec)]
    assert len(set(rates)) == 4, rates  # a sampler seeded as before would draw rates[:2] again
