"""Ensembles end to end on a real local Ray: study, scores, exports; and how failures count."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import optuna
import pytest

from clonesweep.datasets import digits
from clonesweep.orchestrator.backends.base import Event
from clonesweep.orchestrator.ensemble.export import finish
from clonesweep.orchestrator.ensemble.run import EnsembleRequest, member_seed, run_ensemble
from clonesweep.orchestrator.ensemble.score import score
from clonesweep.orchestrator.model import base_model_config
from clonesweep.orchestrator.study.storage import load_study
from clonesweep.spec import load_sweep
from clonesweep.trials import FailReason, TrialResult, TrialSpec, TrialState
from clonesweep.workers.member import FusedGroup, MemberOutput
from clonesweep.workers.runner import WorkerJob
from tests_support import PARETO

LOSS = "sparse_categorical_crossentropy"


@pytest.mark.integration
def test_ray_ensemble_scores_and_exports(ray_cluster: str, sweep_file: Any) -> None:
    import keras

    from clonesweep.orchestrator.backends.ray.backend import RayBackend

    spec = load_sweep(sweep_file(epochs=2, parallel=2, limit=300))
    outcome = run_ensemble(spec, base_model_config(spec), RayBackend(address=ray_cluster),
                           EnsembleRequest(members=3, seed=5))
    assert len(outcome.held) == 3 and not outcome.fused
    report = finish(spec, outcome)
    assert report.complete and report.folder == spec.run_folder / "ensemble"

    # The study: one trial per member, seeds and hashes recorded, table on the study.
    study = load_study("tiny-ensemble", outcome.storage_url)
    trials = sorted(study.get_trials(), key=lambda t: t.user_attrs["member_index"])
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert [t.user_attrs["member_seed"] for t in trials] == [member_seed(5, i) for i in range(3)]
    assert len({t.user_attrs["seeds"]["data"] for t in trials}) == 3
    assert len({t.user_attrs["config_hash"] for t in trials}) == 3
    assert study.user_attrs["ensemble"]["members_held"] == 3

    # The ensemble metric, recomputed in numpy from the exported members.
    _, _, x_val, y_val = digits(limit=300)
    payload = json.loads((report.folder / "ensemble.json").read_text())
    manifest = json.loads((report.folder / "manifest.json").read_text())
    preds = []
    for row in manifest["members"]:
        member = keras.saving.load_model(row["file"], safe_mode=True, compile=False)
        preds.append(keras.ops.convert_to_numpy(member(x_val, training=False)))
        assert row["seeds"] == trials[row["index"]].user_attrs["seeds"]
    probs = np.mean(preds, axis=0)
    labels = y_val.astype(int)
    p = np.clip(probs / probs.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
    expected_acc = float(np.mean(np.argmax(probs, -1) == labels))
    expected_loss = float(-np.mean(np.log(p[np.arange(len(labels)), labels])))
    assert payload["ensemble"]["val_accuracy"] == pytest.approx(expected_acc, abs=1e-9)
    assert payload["ensemble"]["val_loss"] == pytest.approx(expected_loss, rel=1e-5)
    member_accs = [float(np.mean(np.argmax(q, -1) == labels)) for q in preds]
    table = {row["metric"]: row for row in payload["table"]}
    assert table["val_accuracy"]["mean"] == pytest.approx(np.mean(member_accs))
    assert table["val_accuracy"]["min"] == pytest.approx(min(member_accs))
    assert table["val_accuracy"]["std"] == pytest.approx(np.std(member_accs, ddof=1))

    # The averaged model loads in safe mode and predicts the members' mean.
    averaged = keras.saving.load_model(payload["averaged_model"], safe_mode=True)
    assert isinstance(averaged.layers[-1], keras.layers.Average)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(averaged(x_val)), probs, atol=1e-6)


class FakeBackend:
    """Members as scripted outcomes: which fail, and how, per attempt."""

    def __init__(self, fail: dict[tuple[int, int], FailReason]) -> None:
        self.fail, self.events, self.kept = fail, list[Event](), dict[int, MemberOutput]()
        self.submitted: list[TrialSpec] = []

    def start(self, job: WorkerJob, slots: int) -> None:
        assert job.keep_members and not job.keep_best

    def free_slots(self) -> int:
        return 1

    def submit(self, spec: TrialSpec) -> None:
        self.submitted.append(spec)
        reason = self.fail.get((spec.number, spec.attempt))
        if reason is not None:
            self.events.append(TrialResult.failed(spec, reason, "scripted"))
            return
        self.events.append(TrialResult(spec.number, TrialState.COMPLETE, value=0.5,
                                       attempt=spec.attempt, seeds={"data": spec.seed}))
        pred = np.full((4, 2), 0.5)
        self.kept[spec.number] = MemberOutput(pred, np.array([0, 1, 0, 1]), b"")

    def submit_fused(self, group: FusedGroup) -> None:
        raise AssertionError("not fused here")

    def poll(self, timeout: float) -> list[Event]:
        out, self.events = self.events, []
        return out

    def answer(self, report: Any, prune: bool) -> None: ...

    def fetch_model(self, number: int) -> bytes | None:
        return None

    def fetch_member(self, number: int) -> MemberOutput | None:
        return self.kept.pop(number, None)

    def shutdown(self) -> None: ...


def test_failed_members_are_retried_per_the_rules_and_counted(sweep_file: Any) -> None:
    spec = load_sweep(sweep_file())  # sweep.retries defaults to 1
    fail = {(0, 0): FailReason.WORKER_DIED,  # retried, then completes
            (1, 0): FailReason.USER_ERROR,   # never retried
            (2, 0): FailReason.OOM, (2, 1): FailReason.OOM}  # retried once, still fails
    backend = FakeBackend(fail)
    outcome = run_ensemble(spec, base_model_config(spec), backend,
                           EnsembleRequest(members=4, study="fake"))
    assert sorted(m.index for m in outcome.held) == [0, 3]
    assert outcome.retried == 2
    assert sorted((s.number, s.attempt) for s in backend.submitted) == [
        (0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (3, 0)]
    study = load_study("fake", outcome.storage_url)
    states = {t.user_attrs["member_index"]: (t.state.name, t.user_attrs.get("fail_reason"))
              for t in study.get_trials()}
    assert states == {0: ("COMPLETE", None), 1: ("FAIL", "user_error"),
                      2: ("FAIL", "oom"), 3: ("COMPLETE", None)}
    assert score(LOSS, np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))[
        "val_accuracy"] == 1.0


def test_a_multi_objective_sweeps_members_are_told_on_one_direction(sweep_file: Any) -> None:
    """A member's value is the objective its worker monitors; its study has that direction
    only (a study with the sweep's three directions would fail every one-value tell)."""
    path = sweep_file(objective=PARETO)
    spec = load_sweep(path)
    assert spec.is_multi_objective
    outcome = run_ensemble(spec, base_model_config(spec), FakeBackend({}),
                           EnsembleRequest(members=3, study="pareto-members"))
    assert len(outcome.held) == 3
    study = load_study("pareto-members", outcome.storage_url)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE]
    trials = study.get_trials()
    assert [(t.number, t.state.name, t.value) for t in trials] == [
        (i, "COMPLETE", 0.5) for i in range(3)]
    assert [t.user_attrs["member_index"] for t in trials] == [0, 1, 2]
    assert [m.number for m in outcome.members] == [0, 1, 2]


def test_an_ensemble_study_is_never_reused(sweep_file: Any) -> None:
    from clonesweep.errors import SpecError

    spec = load_sweep(sweep_file())
    base = base_model_config(spec)
    run_ensemble(spec, base, FakeBackend({}), EnsembleRequest(members=1, study="once"))
    with pytest.raises(SpecError, match="already holds trials"):
        run_ensemble(spec, base, FakeBackend({}), EnsembleRequest(members=1, study="once"))


def test_members_scored_against_different_targets_are_refused() -> None:
    from clonesweep.errors import SweepFailed
    from clonesweep.orchestrator.ensemble.run import Member, check_targets

    outs = [MemberOutput(np.zeros((2, 2)), np.array(y), b"") for y in ([0, 1], [1, 0])]
    members = [Member(i, None, TrialSpec(i, {}, i), output=o)
               for i, o in enumerate(outs)]
    with pytest.raises(SweepFailed, match="different validation targets"):
        check_targets(members)
