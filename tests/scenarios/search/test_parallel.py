"""Parallel-aware sampling: with P workers, P trials in flight and no duplicate proposals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from clonesweep.orchestrator import InProcessBackend, base_model_config, run_sweep
from clonesweep.orchestrator.sweep import NullProgress
from clonesweep.spec import load_sweep
from clonesweep.trials import TrialSpec

# A small discrete space: TPE without a liar proposes its current favourite to every free
# worker; with the constant liar a running trial counts as a bad result, so it moves on.
SPACE = """
  layers.hidden.units: {values: [4, 8, 16, 32, 64]}
  optimizer.learning_rate: {values: [0.001, 0.003, 0.01]}"""


class _InFlight(NullProgress):
    """Records which trials were running when each trial was asked for."""

    def __init__(self) -> None:
        self.running: dict[int, dict[str, Any]] = {}
        self.peers: list[tuple[int, dict[str, Any], list[dict[str, Any]]]] = []
        self.most = 0

    def on_trial_start(self, spec: TrialSpec) -> None:
        self.peers.append((spec.number, spec.params, list(self.running.values())))
        self.running[spec.number] = spec.params
        self.most = max(self.most, len(self.running))

    def on_trial_end(self, result: Any, counts: Any, best: Any, retried: bool) -> None:
        if not retried:
            self.running.pop(result.number, None)


def test_parallel_tpe_trials_in_flight_are_not_duplicates(sweep: Callable[..., Path]) -> None:
    path = sweep(parameters=SPACE, trials=10, parallel=4,
                 sweep="sampler: {name: tpe, seed: 0, n_startup_trials: 2}")
    spec = load_sweep(path)
    progress = _InFlight()
    outcome = run_sweep(spec, base_model_config(spec), InProcessBackend(), progress)
    assert outcome.counts.complete == 10
    assert progress.most == 4  # the driver keeps P trials in flight
    after_startup = [(n, p, peers) for n, p, peers in progress.peers if n >= 4]
    assert after_startup
    for number, params, peers in after_startup:
        assert params not in peers, f"trial {number} duplicates a running trial"
    # The first 4 trials asked after the startup trials are not all the same point.
    firsts = [tuple(sorted(p.items())) for _, p, _ in after_startup[:4]]
    assert len(set(firsts)) > 1
