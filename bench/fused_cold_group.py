"""Where a fused group's time goes inside one worker, without Ray: 4 digits-MLP members, 5
epochs, batch 64, each case in a fresh Python process (so the first group is cold, as on a
new worker).

Cases: ``unfused`` (the 4 members one after another, as a worker runs them unfused),
``fused`` (one stacked group of 4, then a second, warm, group), ``fused-no-dropout`` (the same
with dropout rate 0: what the per-member mask draws cost) and ``fused-eager`` (an experiment,
not a product mode: the stacked engine's epoch function run without tracing). Prints each
case's wall and the worker's own build/train/eval split.

    python bench/fused_cold_group.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CASES = ("unfused", "fused", "fused-no-dropout", "fused-eager")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits_mlp.json"


def _case(name: str) -> None:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from clonesweep.orchestrator.ensemble.run import member_seed
    from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
    from clonesweep.trials import TrialSpec
    from clonesweep.workers import fusedgraph
    from clonesweep.workers.member import FusedGroup
    from clonesweep.workers.runner import TrialRunner, WorkerJob

    if name == "fused-eager":
        traced = fusedgraph.StackedEngine.__init__

        def untraced(self: Any, *args: Any, **kwargs: Any) -> None:
            traced(self, *args, **kwargs)
            self._epoch = self._train_epoch

        fusedgraph.StackedEngine.__init__ = untraced  # type: ignore[method-assign]
    training = TrainingSpec(epochs=5, batch_size=64, optimizer="adam",
                            optimizer_config={"learning_rate": 1e-3})
    runner = TrialRunner(WorkerJob(
        CONFIG.read_text(), (), DataSpec("clonesweep.datasets:digits",
                                         {"validation_split": 0.2, "seed": 0}),
        training, ObjectiveSpec(metric="val_accuracy"),
        keep_best=False, keep_members=True))
    params: dict[str, Any] = {"layers.hidden.units": 64}
    if name == "fused-no-dropout":
        params["layers.drop.rate"] = 0.0

    class _NoPruning:
        def report(self, step: int, value: float) -> bool:
            return False

    if name == "unfused":
        for i in range(4):
            t = time.perf_counter()
            done = runner.run(TrialSpec(i, params, member_seed(0, i)), _NoPruning())
            print(f"{name:>16}  member {i} ({'cold' if i == 0 else 'warm'}): "
                  f"{time.perf_counter() - t:.3f} s  {_split(done.timings)}")
        return
    for g, label in enumerate(("cold", "warm")):
        first = 100 * g
        group = FusedGroup(first, tuple(TrialSpec(first + i, params, member_seed(first, i))
                                        for i in range(4)))
        t = time.perf_counter()
        done = runner.run_fused(group)
        print(f"{name:>16}  group of 4 ({label}): {time.perf_counter() - t:.3f} s  "
              f"{_split(done.timings)}")


def _split(t: object) -> str:
    return (f"build {getattr(t, 'build_s', 0.0):.3f}  train {getattr(t, 'train_s', 0.0):.3f}  "
            f"eval {getattr(t, 'eval_s', 0.0):.3f}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        _case(sys.argv[2])
        return
    for name in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", name], check=True,
                             capture_output=True, text=True).stdout
        print(out, end="", flush=True)


if __name__ == "__main__":
    main()
