"""sweep.tensorboard: per-trial TensorBoard logs, read back from the event files."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

import clonesweep

pytest.importorskip("tensorboardX")


def read_events(folder: Path) -> dict[str, Any]:
    """Every event file of a run folder: scalars by tag ({step: value}) and the plugins
    whose summaries it holds (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, dict[int, float]] = {}
    plugins: dict[str, list[bytes]] = {}
    for file in sorted(folder.glob("events.out.tfevents.*")):
        data = file.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin:
                    plugins.setdefault(plugin, []).append(value.metadata.plugin_data.content)
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return {"scalars": scalars, "plugins": plugins}


def test_each_trial_has_its_curves_and_hparams(sweep_file: Any) -> None:
    path = sweep_file(trials=2, epochs=2)
    result = clonesweep.run(path, backend="inprocess", progress=False, tensorboard=True)
    root = result.run_folder / "tensorboard"
    assert sorted(p.name for p in root.iterdir()) == ["trial-00000", "trial-00001"]
    for trial in result.study.get_trials():
        got = read_events(root / f"trial-{trial.number:05d}")
        history = trial.user_attrs["history"]
        for metric in ("val_accuracy", "loss", "val_loss"):
            assert got["scalars"][metric] == pytest.approx(
                {i + 1: v for i, v in enumerate(history[metric])}, rel=1e-6)
        assert got["scalars"]["hparam/val_accuracy"][0] == pytest.approx(trial.value)
        hparams = b"".join(got["plugins"]["hparams"])
        for key in trial.params:  # the HParams view's columns: the params by their paths
            assert key.encode() in hparams


def test_the_switch_is_checked_like_any_key(sweep_file: Any) -> None:
    path = sweep_file(sweep_extra="\n  tensorboard: maybe")
    with pytest.raises(clonesweep.SpecError) as info:
        clonesweep.load_sweep(path)
    assert "sweep.tensorboard" in str(info.value)
