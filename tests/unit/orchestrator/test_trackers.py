"""MLflow and W&B trackers (trackers.py), told by the sweep's driver after each tell.

Real libraries, no server: MLflow writes a file store under tmp_path (read back with its own
client), W&B runs offline into tmp_path (its run files read back). The trials are scripted
(FakeBackend): the trackers live on the driver and see only what the study records. Every
test runs with the network refused to this process (loopback excepted): a tracker that
tries to reach a server fails the test.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from clonesweep.errors import SpecError
from clonesweep.orchestrator import base_model_config
from clonesweep.orchestrator.study.storage import load_study
from clonesweep.orchestrator.sweep import SweepOutcome, run_sweep
from clonesweep.orchestrator.testing import Complete, Fail, FakeBackend
from clonesweep.spec import SweepSpec, load_sweep
from clonesweep.trials import FailReason
from tests_support import write_sweep

pytest.importorskip("optuna_integration")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """Refuse (and record) any connection this process opens beyond loopback; keep both
    libraries' telemetry and banners off."""
    tried: list[Any] = []
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in (
                "127.0.0.1", "::1", "localhost"):
            tried.append(address)
            raise OSError(f"test: no network ({address})")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    for key, value in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                       "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
                       "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(key, value)
    yield tried
    assert tried == [], f"a tracker tried to reach {tried}"


def _spec(tmp_path: Path, trackers: str, **kwargs: Any) -> SweepSpec:
    path = write_sweep(tmp_path, **kwargs,
                       sweep_extra=f"\n  storage: journal://{tmp_path / 'study.journal'}")
    path.write_text(path.read_text() + f"trackers:\n{trackers}\n")
    return load_sweep(path)


def _sweep(spec: SweepSpec, backend: FakeBackend) -> SweepOutcome:
    return run_sweep(spec, base_model_config(spec), backend)


_SCRIPT = {0: Complete(value=0.9, epochs=3), 1: Fail(FailReason.USER_ERROR, "bad loader"),
           2: Complete(value=0.6, epochs=3)}


def test_mlflow_file_store_holds_a_run_per_trial(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    spec = _spec(tmp_path, "  mlflow: {tracking_uri: mlruns, experiment: digits-lab}",
                 trials=3)
    outcome = _sweep(spec, FakeBackend(_SCRIPT))
    assert outcome.counts.complete == 2 and outcome.counts.failed == 1
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("digits-lab")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["0", "1", "2"]
    for name, run in runs.items():
        assert set(run.data.params) == {"layers.hidden.units", "optimizer.learning_rate"}
        assert run.data.tags["number"] == name
        assert run.data.tags["direction"] == "MAXIMIZE"
    done = runs["0"]
    assert done.data.tags["state"] == "COMPLETE"
    assert done.data.metrics["val_accuracy"] == pytest.approx(0.9)  # named by the metric
    epochs = client.get_metric_history(done.info.run_id, "epoch/val_accuracy")
    assert [(m.step, round(m.value, 6)) for m in epochs] == [(1, 0.3), (2, 0.6), (3, 0.9)]
    assert len(client.get_metric_history(done.info.run_id, "epoch/loss")) == 3
    failed = runs["1"]
    assert failed.data.tags["state"] == "FAIL" and "val_accuracy" not in failed.data.metrics
    assert failed.data.tags["fail_reason"] == "user_error"
    assert failed.data.tags["message"] == "bad loader"


def _wandb_run(path: Path) -> dict[str, Any]:
    """What an offline W&B run file holds: its name, group, config and summary (the last
    value of each key). The file is W&B's record log (LevelDB's log format: 32 KiB blocks,
    each record a 7-byte header and a chunk of a protobuf ``Record``); W&B's own reader of
    it is no longer in its Python package."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    run: dict[str, Any] = {"config": {}, "summary": {}}
    pos, block, chunks = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a header: padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):  # FULL or LAST ends a record
            continue
        record, chunks = pb.Record.FromString(chunks), b""
        which = record.WhichOneof("record_type")
        if which == "run":
            run.update(name=record.run.display_name, group=record.run.run_group)
        elif which in ("config", "summary"):
            for item in getattr(record, which).update:
                key = item.key or "/".join(item.nested_key)
                run[which][key] = json.loads(item.value_json)
    return run


def test_wandb_offline_holds_a_run_per_trial(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "  wandb: {project: digits-lab, mode: offline, dir: wandb-files}",
                 trials=3)
    outcome = _sweep(spec, FakeBackend(_SCRIPT))
    assert outcome.counts.finished == 3
    files = sorted((tmp_path / "wandb-files" / "wandb").glob("offline-run-*/run-*.wandb"))
    runs = {r["name"]: r for r in map(_wandb_run, files)}
    assert sorted(runs) == ["trial-0", "trial-1", "trial-2"]
    for run in runs.values():
        assert run["group"] == spec.name
        assert set(run["config"]) == {"direction", "layers.hidden.units",
                                      "optimizer.learning_rate"}
        assert run["config"]["direction"] == ["MAXIMIZE"]
    done, failed = runs["trial-0"]["summary"], runs["trial-1"]["summary"]
    assert done["state"] == "complete" and done["val_accuracy"] == pytest.approx(0.9)
    assert runs["trial-2"]["summary"]["val_accuracy"] == pytest.approx(0.6)
    assert failed["state"] == "fail" and failed["fail_reason"] == "user_error"
    assert "val_accuracy" not in failed


def _ensemble(spec: SweepSpec, backend: FakeBackend, fused: bool = False) -> Any:
    from clonesweep.orchestrator.ensemble.run import EnsembleRequest, run_ensemble

    return run_ensemble(spec, base_model_config(spec), backend,
                        EnsembleRequest(members=3, seed=5, fused=fused))


@pytest.mark.parametrize("fused", [False, True])
def test_an_ensemble_s_members_reach_mlflow(tmp_path: Path, fused: bool) -> None:
    from mlflow import MlflowClient

    spec = _spec(tmp_path, "  mlflow: {tracking_uri: mlruns, experiment: digits-lab}",
                 parallel=2)
    # Unfused, member 1 fails alone; fused, its group (members 0 and 1) fails as a whole.
    outcome = _ensemble(spec, FakeBackend({1: Fail(FailReason.NAN_LOSS, "nan at epoch 2")}),
                        fused)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("digits-lab")
    assert experiment is not None
    runs = {r.data.tags["member"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["0", "1", "2"]
    for run in runs.values():
        assert run.data.tags["ensemble"] == outcome.study
    states = {n: run.data.tags["state"] for n, run in runs.items()}
    assert states == {"0": "FAIL" if fused else "COMPLETE", "1": "FAIL", "2": "COMPLETE"}
    assert [t.state.name for t in load_study(outcome.study, outcome.storage_url).trials] == \
        [states[str(n)] for n in range(3)]  # what the study holds
    assert runs["2"].data.metrics["val_accuracy"] == pytest.approx(
        outcome.members[2].result.value)
    if not fused:
        assert runs["1"].data.tags["fail_reason"] == "nan_loss"


def test_an_ensemble_s_members_reach_wandb(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "  wandb: {project: digits-lab, mode: offline, dir: wandb-files}",
                 parallel=2)
    outcome = _ensemble(spec, FakeBackend({}))
    files = sorted((tmp_path / "wandb-files" / "wandb").glob("offline-run-*/run-*.wandb"))
    runs = {r["name"]: r for r in map(_wandb_run, files)}
    assert sorted(runs) == ["member-0", "member-1", "member-2"]
    assert {r["group"] for r in runs.values()} == {outcome.study}
    assert runs["member-2"]["summary"]["state"] == "complete"


def test_an_unreachable_tracker_warns_once_and_the_sweep_goes_on(tmp_path: Path) -> None:
    # Loopback port 9 (discard): nothing listens, the connection is refused at once.
    spec = _spec(tmp_path, "  mlflow: {tracking_uri: 'http://127.0.0.1:9'}", trials=3)
    with pytest.warns(RuntimeWarning, match="the mlflow tracker failed") as caught:
        outcome = _sweep(spec, FakeBackend(_SCRIPT))
    assert outcome.counts.finished == 3 and outcome.counts.complete == 2
    assert len([w for w in caught if "tracker failed" in str(w.message)]) == 1


def test_a_missing_tracker_library_is_refused_before_anything_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    spec = _spec(tmp_path, "  wandb: {mode: offline}")
    with pytest.raises(SpecError) as info:
        _sweep(spec, FakeBackend())
    assert "trackers.wandb" in str(info.value) and "clonesweep[wandb]" in str(info.value)
    assert not spec.run_folder.exists()
