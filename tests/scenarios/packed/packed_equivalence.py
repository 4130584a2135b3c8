"""Packed trials against the same trials trained alone, on one JAX worker: run as
``KERAS_BACKEND=jax python tests/scenarios/packed/packed_equivalence.py MODEL MODE...`` (Keras fixes
its backend per process; the rest of the suite runs TensorFlow). Prints one JSON line of
measured differences; ``test_packed_equivalence.py`` asserts on it.

Three trials of one structure through the worker's own paths (``TrialRunner.run_packed``
and ``TrialRunner.run``, Keras's fit on JAX): A (lr 1e-3, Dropout 0.2), B (lr 0.06, weight
decay 0.01, Dropout 0.4), C (lr 1e-3, weight decay 0.05, Dropout 0.1); 240 training samples
in batches of 32 (a ragged last batch of 16), 60 validation samples, 2 epochs; Keras's fit
with ``jit_compile`` on (its default on JAX; un-jitted steps round differently). The control:
A's params with B's seed, trained alone, against packed A.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from packed_models import model_config, sweep_yaml

from clonesweep.orchestrator.packing import packable_keys
from clonesweep.orchestrator.sweep import worker_job
from clonesweep.spec import load_sweep
from clonesweep.trials import PackedGroup, TrialSpec
from clonesweep.workers.runner import TrialRunner

LR, WD, DROP = "optimizer.learning_rate", "optimizer.weight_decay", "layers.drop.rate"
#: B's weight decay (``PACKED_B_WD`` overrides it: a probe of where B's difference comes from).
B_WD = float(os.environ.get("PACKED_B_WD", "0.01"))
TRIALS = (TrialSpec(0, {LR: 1e-3, WD: 0.0, DROP: 0.2}, 11),
          TrialSpec(1, {LR: 0.06, WD: B_WD, DROP: 0.4}, 12),
          TrialSpec(2, {LR: 1e-3, WD: 0.05, DROP: 0.1}, 13))


class _Capture(TrialRunner):
    """A runner that keeps each trained trial's weights (through ``on_trained``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.weights: dict[int, list[np.ndarray]] = {}
        super().__init__(*args, on_trained=self._keep, **kwargs)

    def _keep(self, number: int, value: float, model: Any) -> None:
        self.weights[number] = [np.array(w) for w in model.weights]


class _NoPruning:
    def report(self, step: int, value: float) -> bool:
        return False


def _diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b, strict=True))


def main(kind: str, modes: list[str]) -> dict[str, Any]:
    config = model_config(kind)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.json").write_text(json.dumps(config))
        path = Path(tmp) / "s.yaml"
        path.write_text(sweep_yaml(kind, trials=3, parameters=f"""
  {LR}: {{min: 0.001, max: 0.06}}
  {WD}: {{min: 0.0, max: 0.05}}
  {DROP}: {{min: 0.0, max: 0.5}}""", training_extra="\n  jit_compile: true"))
        spec = load_sweep(path)
        runner = _Capture(worker_job(spec, config))
        packable = packable_keys(spec, config)
        out: dict[str, Any] = {"packable": list(packable)}
        alone = [runner.run(t, _NoPruning()) for t in TRIALS]
        control = TrialSpec(9, dict(TRIALS[0].params), TRIALS[1].seed)
        runner.run(control, _NoPruning())
        alone_w = dict(runner.weights)
        for mode in modes:
            runner.weights.clear()
            packed = runner.run_packed(PackedGroup(TRIALS, packable, mode),
                                       [_NoPruning()] * len(TRIALS))
            out[mode] = {
                "states": [r.state.value for r in packed],
                "engines": [r.engine for r in packed],
                "weights": [_diff(runner.weights[t.number], alone_w[t.number])
                            for t in TRIALS],
                "history": [max(abs(x - y) for key in a.history
                                for x, y in zip(a.history[key], p.history[key], strict=True))
                            for a, p in zip(alone, packed, strict=True)],
                "same_keys": all(set(a.history) == set(p.history)
                                 for a, p in zip(alone, packed, strict=True)),
                "values": [[a.value, p.value] for a, p in zip(alone, packed, strict=True)],
                "control": _diff(runner.weights[0], alone_w[9]),
            }
        return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
