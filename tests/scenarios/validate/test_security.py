"""Security: safe mode on every rebuild, no way to turn it off, passwords masked everywhere,
and whatever clonesweep starts that listens binds to 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import uuid
from pathlib import Path
from typing import Any

import keras
import optuna
import pytest
from sqlalchemy.engine import make_url

from clonesweep.cli.main import _parser, main
from clonesweep.errors import UnsafeConfigError
from clonesweep.spec.settings import PASSWORD_ENV
from clonesweep.workers import materialize as materialize_module
from clonesweep.workers import rebuild as rebuild_module
from clonesweep.workers.rebuild import rebuild
from tests_support import REPO, database_text

SRC = REPO / "src" / "clonesweep"
MLP = json.loads((REPO / "configs" / "digits_mlp.json").read_text())


def _serialized(model: keras.Model) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    return config


def _lookup(vocabulary: Any) -> dict[str, Any]:
    model = keras.Sequential([keras.Input((1,), dtype="string"),
                              keras.layers.StringLookup(vocabulary=["a", "b"], name="lk")])
    config = _serialized(model)
    config["config"]["layers"][1]["config"]["vocabulary"] = vocabulary
    return config


# -- safe mode -----------------------------------------------------------------------------
def test_every_deserialization_of_a_rebuild_is_in_safe_mode(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any]] = []
    original = keras.saving.deserialize_keras_object

    def spy(config: Any, *args: Any, **kwargs: Any) -> Any:
        name = config.get("class_name") if isinstance(config, dict) else config
        calls.append((str(name), kwargs.get("safe_mode", "missing")))
        return original(config, *args, **kwargs)

    monkeypatch.setattr(keras.saving, "deserialize_keras_object", spy)
    # A process deserializes each base config once (rebuild._BASES): start from none.
    monkeypatch.setattr(rebuild_module, "_BASES", {})
    rebuild(MLP, {"layers.hidden.units": 8}, seed=1)
    names = [name for name, _ in calls]
    assert "Sequential" in names and "Dense" in names  # the base model and the clone_function
    assert all(safe is True for _, safe in calls), calls
    calls.clear()
    rebuild(MLP, {"layers.hidden.units": 9}, seed=2)  # the cached base: only the layers
    assert "Sequential" not in [name for name, _ in calls] and calls
    assert all(safe is True for _, safe in calls), calls


def test_a_vocabulary_file_path_is_refused() -> None:
    with pytest.raises(UnsafeConfigError, match="vocabulary file"):
        rebuild(_lookup("/etc/passwd"), {}, seed=0)
    with pytest.raises(UnsafeConfigError, match="file path or URL"):
        rebuild(_lookup(["a", "b"]), {"layers.lk.vocabulary": "/etc/passwd"}, seed=0)


def test_the_clone_function_itself_is_in_safe_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without clonesweep's own path check, Keras's safe mode in the clone_function still
    refuses a vocabulary file brought in by a param."""
    monkeypatch.setattr(materialize_module, "_refuse_path_like", lambda key, value: None)
    with pytest.raises(UnsafeConfigError, match="safe mode refused to rebuild layer 'lk'"):
        rebuild(_lookup(["a", "b"]), {"layers.lk.vocabulary": "/etc/passwd"}, seed=0)


def test_a_lambda_layer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Lambda(lambda x: x + 1.0, name="plus_one"),
                              keras.layers.Dense(2, name="out")])
    config = _serialized(model)
    with pytest.raises(UnsafeConfigError, match="Lambda layer"):
        rebuild(config, {}, seed=0)
    # Keras's safe mode refuses it too, were clonesweep's own check gone.
    monkeypatch.setattr(materialize_module, "_refuse_lambda", lambda config: None)
    with pytest.raises(UnsafeConfigError, match="safe mode"):
        rebuild(config, {}, seed=0)


def test_no_flag_or_sweep_key_turns_safe_mode_off() -> None:
    from clonesweep.spec import loader, searchspace, settings, sources

    parser = _parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    flags = [flag for cmd in subparsers.choices.values()
             for flag in cmd._option_string_actions]
    assert "--storage" in flags
    assert not [f for f in flags if "safe" in f.lower() or "trust" in f.lower()]
    keys = [*loader._TOP_KEYS, *loader._TRAINING_KEYS, *settings._KEYS,
            *searchspace._ENTRY_KEYS, *sources._SOURCES, "imports", "loader", "kwargs"]
    assert not [k for k in keys if "safe" in k.lower()]
    unsafe = re.compile(r"safe_mode\s*=\s*False\s*[,)]|enable_unsafe_deserialization\(")
    offenders = [str(p) for p in SRC.rglob("*.py") if unsafe.search(p.read_text())]
    assert not offenders
    assert "safe_mode=True" in (SRC / "workers" / "rebuild.py").read_text()


@pytest.mark.parametrize("extra", [
    "model: {config: model.json, safe_mode: false}\n",
    "model: {config: model.json}\nsweep: {unsafe_deserialization: true}\n",
    "model: {config: model.json}\ntraining: {safe_mode: false}\n",
])
def test_sweep_keys_for_unsafe_loading_are_refused(
        extra: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.json").write_text(json.dumps(MLP))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: t\n" + extra)
    assert main(["validate", str(sweep)]) == 2
    assert "unknown key" in capsys.readouterr().err


# -- passwords -----------------------------------------------------------------------------
def test_a_password_from_the_environment_is_masked_when_the_server_is_unreachable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.json").write_text(json.dumps(MLP))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: t\nmodel: {config: model.json}\n")
    monkeypatch.setenv(PASSWORD_ENV, "env-s3cret-42")
    argv = ["validate", str(sweep), "--storage",
            "postgresql+psycopg2://sweeper@127.0.0.1:1/studies"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "field '--storage'" in err and "sweeper:***@127.0.0.1:1/studies" in err, err
    assert "env-s3cret-42" not in err
    assert PASSWORD_ENV not in os.environ


def _user_only(url: str) -> str:
    u = make_url(url)
    return f"{u.drivername}://{u.username}@{u.host}:{u.port}/{u.database}"


def test_the_password_is_nowhere_after_a_sweep(
        postgres_url: str, sweep_file: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    from clonesweep.orchestrator.backends.base import InProcessBackend

    password = make_url(postgres_url).password or ""
    assert password
    jobs: list[Any] = []
    start = InProcessBackend.start
    monkeypatch.setattr(InProcessBackend, "start",
                        lambda self, job, slots: (jobs.append(job), start(self, job, slots))[1])
    caplog.set_level(logging.DEBUG)
    name = f"sec-{uuid.uuid4().hex[:8]}"
    path = sweep_file(name=name, trials=2, epochs=1)
    storage = ["--storage", _user_only(postgres_url)]
    outputs = []
    for argv in (["validate", str(path), *storage],
                 ["run", str(path), "--backend", "inprocess", *storage],
                 ["validate", str(path), "--json", *storage],
                 ["status", str(path), *storage]):
        monkeypatch.setenv(PASSWORD_ENV, password)
        code = main(argv)
        out = capsys.readouterr()
        assert code == 0, out.err[-2000:]
        outputs += [out.out, out.err]
        assert PASSWORD_ENV not in os.environ
    assert "resumes study" in outputs[4] and "sweeper:***@" in outputs[4]  # masked
    text = "\n".join(outputs) + caplog.text
    assert password not in text, "the password was printed or logged"
    study = optuna.load_study(study_name=name, storage=postgres_url)
    assert len(study.get_trials()) == 2
    assert password not in database_text(postgres_url), "the password is in the study database"
    files = [p for p in (path.parent / "runs" / name).rglob("*") if p.is_file()]
    assert files and not [p.name for p in files if password.encode() in p.read_bytes()]
    assert jobs and not [j for j in jobs if password.encode() in pickle.dumps(j)]


def test_a_wrong_password_is_masked(postgres_url: str, sweep_file: Any,
                                    monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_file(name=f"sec-wrong-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv(PASSWORD_ENV, "wrong-pw-0123")
    before = set(path.parent.rglob("*"))
    assert main(["validate", str(path), "--storage", _user_only(postgres_url)]) == 2
    err = capsys.readouterr().err
    assert "field '--storage'" in err and "unreachable" in err, err
    assert "wrong-pw-0123" not in err and "sweeper:***@" in err
    assert set(path.parent.rglob("*")) == before


# -- what listens --------------------------------------------------------------------------
def test_the_dashboard_binds_to_localhost_by_default(
        sweep_file: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    served: dict[str, Any] = {}
    monkeypatch.setattr(optuna_dashboard, "run_server",
                        lambda url, host, port: served.update(host=host, port=port))
    assert main(["dashboard", str(sweep_file(name="dash"))]) == 0
    assert served["host"] == "127.0.0.1"
    assert "http://127.0.0.1:8080/" in capsys.readouterr().out


def _ray_init_kwargs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import ray

    from clonesweep.errors import SweepFailed
    from clonesweep.orchestrator.backends.ray.reaper import Reaper
    from clonesweep.orchestrator.backends.ray.startup import start_ray
    from clonesweep.spec.model import ResourcesSpec

    seen: dict[str, Any] = {}

    def fake_init(**kwargs: Any) -> None:
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    with pytest.raises(SweepFailed):
        start_ray(None, "tensorflow", ResourcesSpec(), 1, Reaper())  # RayBackend.start's first step
    return seen


def test_the_embedded_ray_starts_no_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = _ray_init_kwargs(monkeypatch)
    assert kwargs["include_dashboard"] is False
    assert kwargs.get("dashboard_host", "127.0.0.1") == "127.0.0.1"


def test_the_embedded_ray_binds_its_node_to_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = _ray_init_kwargs(monkeypatch)
    assert kwargs.get("address") is None
    assert kwargs.get("_node_ip_address") == "127.0.0.1"
