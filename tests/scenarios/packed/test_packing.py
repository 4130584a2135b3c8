"""The driver's side of packed trials: what may differ inside a group, and the groups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from packed_models import model_config, sweep_yaml

from clonesweep.errors import SpecError
from clonesweep.orchestrator.loop import AskedFailed
from clonesweep.orchestrator.packing import (
    PackingPolicy,
    group_key,
    packable_keys,
    packing,
    packing_note,
    resolve_packing,
)
from clonesweep.spec import load_sweep
from clonesweep.trials import FailReason, PackedGroup, TrialResult, TrialSpec


def _spec(tmp_path: Path, kind: str, parameters: str, pack: str = "{enabled: true}",
          trials: int = 4, **extra: str) -> Any:
    (tmp_path / "model.json").write_text(json.dumps(model_config(kind)))
    path = tmp_path / "s.yaml"
    path.write_text(sweep_yaml(kind, trials=trials, parameters=parameters, pack=pack, **extra))
    return load_sweep(path)


_TUNING = """
  optimizer.learning_rate: {min: 0.001, max: 0.01, log: true}
  optimizer.weight_decay: {min: 0.0, max: 0.01}
  layers.drop.rate: {min: 0.0, max: 0.5}"""


def _auto(spec: Any, arrays: bool = True, can_pack: bool = True) -> bool | None:
    """What auto decides for ``spec`` (a sweep of the CNN) once its data are arrays checked
    on the driver (what ``run`` hands the workers) or left to a loader of datasets."""
    import dataclasses

    from clonesweep.spec.model import DataSpec
    from clonesweep.workers.given import CHECKED_LOADER

    if arrays:
        spec = dataclasses.replace(spec, data=DataSpec(CHECKED_LOADER, {}))
    resolved = resolve_packing(spec, model_config("cnn"), can_pack=can_pack)
    return resolved.training.pack.enabled


@pytest.mark.parametrize("pack", ["{max_trials: 4}", "{enabled: auto, max_trials: 4}"])
def test_auto_packs_a_tuning_sweep_of_enough_trials(tmp_path: Path, pack: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    spec = _spec(tmp_path, "cnn", _TUNING, pack=pack, trials=8)
    assert spec.training.pack.enabled is None  # auto until the run decides
    assert _auto(spec) is True
    assert packing_note(spec, model_config("cnn"), arrays=True) == \
        "auto: on, by up to 4 on JAX workers"
    assert _auto(spec, can_pack=False) is False  # the in-process backend
    assert _auto(spec, arrays=False) is False  # datasets train on Keras's fit
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")  # the user's choice stands
    assert _auto(spec) is False
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert _auto(spec) is True


def test_auto_leaves_unpacked_what_would_train_alone(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    few = _spec(tmp_path, "cnn", _TUNING, pack="{max_trials: 4}", trials=7)
    assert _auto(few) is False  # under two groups' worth
    assert packing_note(few, model_config("cnn"), arrays=True) == \
        "auto: off (the budget of 7 trials is under two groups of training.pack.max_trials (4))"
    import dataclasses

    from clonesweep.spec.model import DataSpec
    from clonesweep.workers.given import CHECKED_LOADER

    def checked(spec: Any) -> Any:
        return dataclasses.replace(spec, data=DataSpec(CHECKED_LOADER, {}))

    # `run --trials N` is the run's budget: it decides, not the file's.
    assert resolve_packing(checked(few), model_config("cnn"), trials=8).training.pack.enabled
    enough = checked(_spec(tmp_path, "cnn", _TUNING, pack="{max_trials: 4}", trials=8))
    assert resolve_packing(enough, model_config("cnn")).training.pack.enabled
    assert not resolve_packing(enough, model_config("cnn"), trials=4).training.pack.enabled
    shapes = _spec(tmp_path, "cnn", _TUNING + "\n  layers.conv.filters: {values: [4, 8]}",
                   pack="{max_trials: 4}", trials=16)
    assert _auto(shapes) is False  # filters change shapes: groups of one or two
    # `validate` says which param keeps it unpacked.
    assert packing_note(shapes, model_config("cnn"), arrays=True) == \
        "auto: off (layers.conv.filters may not differ inside a group)"
    gpus = _spec(tmp_path, "cnn", _TUNING, pack="{max_trials: 4}", trials=16,
                 sweep_extra="\n  resources: {gpu: 1}")
    assert _auto(gpus) is False  # not measured on GPUs; JAX may lack its CUDA plugin
    called = _spec(tmp_path, "cnn", _TUNING, pack="{max_trials: 4}", trials=16,
                   training_extra="\n  callbacks: [{name: TerminateOnNaN}]")
    assert _auto(called) is False  # callbacks train on Keras's fit
    for fixed in ("{enabled: true}", "{enabled: false}"):  # the file's word stands
        spec = _spec(tmp_path, "cnn", _TUNING, pack=fixed, trials=2)
        assert _auto(spec) is ("true" in fixed)


def test_pack_enabled_must_be_true_false_or_auto(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"enabled.*expected true, false or auto.*'sometimes'"):
        _spec(tmp_path, "cnn", _TUNING, pack="{enabled: sometimes}")


def test_packable_keys_come_from_the_spec_and_the_base_model(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "transformer", """
  optimizer.learning_rate: {min: 0.001, max: 0.01}
  optimizer.weight_decay: {min: 0.0, max: 0.01}
  optimizer.beta_1: {min: 0.8, max: 0.95}
  layers.drop.rate: {min: 0.0, max: 0.5}
  layers[Dropout].rate: {min: 0.0, max: 0.5}
  layers.mha.dropout: {min: 0.0, max: 0.5}
  layers.embed.units: {values: [8, 16]}
  train.batch_size: {values: [16, 32]}""")
    keys = packable_keys(spec, model_config("transformer"))
    # Learning rate, weight decay and plain Dropout rates stack; beta_1 is a Python float
    # inside Adam, attention dropout takes another code path at rate 0, units change shapes.
    assert keys == ("optimizer.learning_rate", "optimizer.weight_decay", "layers.drop.rate",
                    "layers[Dropout].rate")


class _PackingBackend:
    """What :func:`packing` asks of a backend: that it runs packed groups."""

    def submit_packed(self, *args: Any) -> None:  # pragma: no cover - never called here
        raise AssertionError("not called by packing()")


@pytest.mark.parametrize("mha", ["{min: 0.0, max: 0.5}", "{values: [0.0, 0.2]}"])
def test_a_continuous_param_that_cannot_differ_in_a_group_is_warned_of(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, mha: str) -> None:
    # Every trial draws its own attention dropout: no two trials could share a group.
    spec = _spec(tmp_path, "transformer", f"""
  optimizer.learning_rate: {{min: 0.001, max: 0.01}}
  layers.mha.dropout: {mha}""")
    with caplog.at_level("WARNING", logger="clonesweep.orchestrator.packing"):
        policy = packing(object(), spec, model_config("transformer"), _PackingBackend())
    assert isinstance(policy, PackingPolicy) and policy.packable == ("optimizer.learning_rate",)
    warned = [r.getMessage() for r in caplog.records]
    if "values" in mha:  # a few values: trials that drew the same one share a group
        assert warned == []
    else:
        assert len(warned) == 1 and "layers.mha.dropout may not differ" in warned[0], warned
        assert "almost every trial will train alone" in warned[0]


def test_the_group_key_ignores_packable_params_only() -> None:
    packable = ("optimizer.learning_rate",)
    a = TrialSpec(0, {"optimizer.learning_rate": 0.1, "layers.hidden.units": 8}, 1)
    b = TrialSpec(1, {"optimizer.learning_rate": 0.2, "layers.hidden.units": 8}, 2)
    c = TrialSpec(2, {"optimizer.learning_rate": 0.1, "layers.hidden.units": 16}, 3)
    assert group_key(a, packable) == group_key(b, packable) != group_key(c, packable)
    assert group_key(TrialSpec(3, {}, 1, structure="abc"), packable) is None


class _Inner:
    """The wrapped policy's ask: hands out ``specs`` and records the running counts."""

    def __init__(self, specs: list[TrialSpec | AskedFailed], budget: int) -> None:
        self.specs, self.budget, self.seen = list(specs), budget, []
        self.abandoned: list[Any] = []

    def ask(self, running: int) -> Any:
        self.seen.append(running)
        if running >= self.budget or not self.specs:
            return None
        return self.specs.pop(0)

    def abandon(self, running: list[Any], cause: BaseException | None) -> None:
        self.abandoned = running


def test_the_policy_asks_a_batch_and_groups_it() -> None:
    lr = "optimizer.learning_rate"
    specs: list[Any] = [TrialSpec(i, {lr: 0.1 * i, "layers.hidden.units": 8 << (i % 2)}, i)
                        for i in range(5)]
    failed = TrialSpec(5, {}, 5)
    specs.insert(2, AskedFailed(failed, TrialResult.failed(failed, FailReason.INVALID_CONFIG,
                                                           "x")))
    inner = _Inner(specs, budget=100)
    policy = PackingPolicy(inner, (lr,), max_trials=4, mode="vmap")
    first = policy.ask(0)
    # One batch of 4 asks (one failed while asked); each ask counted the batch as running.
    assert inner.seen == [0, 1, 2, 3]
    assert isinstance(first, AskedFailed)
    group = policy.ask(0)
    assert isinstance(group, PackedGroup)
    assert [t.number for t in group.trials] == [0, 2] and group.packable == (lr,)
    alone = policy.ask(2)
    assert isinstance(alone, TrialSpec) and alone.number == 1  # no partner in its batch
    assert len(inner.seen) == 4  # the queue first: no new ask
    nxt = policy.ask(3)  # a new batch: 3, 4 (units 16, 8) each alone
    assert isinstance(nxt, TrialSpec) and nxt.number == 3
    policy.abandon([], None)  # what still waits here is abandoned with the running
    assert [t.number for t in inner.abandoned] == [4]


def test_the_policy_stops_at_the_budget() -> None:
    lr = "optimizer.learning_rate"
    inner = _Inner([TrialSpec(i, {lr: 0.1}, i) for i in range(10)], budget=3)
    policy = PackingPolicy(inner, (lr,), max_trials=8, mode="vmap")
    group = policy.ask(0)
    assert isinstance(group, PackedGroup) and len(group.trials) == 3
    assert policy.ask(3) is None


def test_pack_settings_are_read_and_checked(tmp_path: Path) -> None:
    params = "\n  optimizer.learning_rate: {min: 0.001, max: 0.01}"
    spec = _spec(tmp_path, "mlp", params, "{enabled: true, max_trials: 3, mode: map}")
    assert (spec.training.pack.enabled, spec.training.pack.max_trials,
            spec.training.pack.mode) == (True, 3, "map")
    assert not _spec(tmp_path, "mlp", params, "{}").training.pack.enabled
    with pytest.raises(SpecError, match=r"training\.pack\.mode") as err:
        _spec(tmp_path, "mlp", params, "{mode: vamp}")
    assert "vmap" in str(err.value)
    with pytest.raises(SpecError, match=r"training\.pack\.max_trials"):
        _spec(tmp_path, "mlp", params, "{max_trials: 1}")
    with pytest.raises(SpecError, match=r"training\.pack\.size"):
        _spec(tmp_path, "mlp", params, "{size: 4}")
