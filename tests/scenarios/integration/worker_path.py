"""Run the worker path (rebuild, train, report, keep the best model) on $KERAS_BACKEND.

Keras picks its backend when it is first imported, so the tests run this file in a fresh
process and read the JSON it prints on its last line.
"""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from pathlib import Path

from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
from clonesweep.trials import TrialSpec
from clonesweep.workers.runner import TrialRunner, WorkerJob
from clonesweep.workers.versions import runtime_versions

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


class Recorder:
    def __init__(self, prune_from: int | None = None) -> None:
        self.steps: list[int] = []
        self.prune_from = prune_from

    def report(self, step: int, value: float) -> bool:
        self.steps.append(step)
        return self.prune_from is not None and step >= self.prune_from


def job(model: str, loader: str, **changes: object) -> WorkerJob:
    return WorkerJob(
        base_config_json=(CONFIGS / model).read_text(),
        imports=(),
        data=DataSpec(loader, {"limit": 240}),
        training=TrainingSpec(epochs=2, batch_size=32, optimizer_config={"learning_rate": 0.01}),
        objective=ObjectiveSpec(),
        versions=runtime_versions(os.environ["KERAS_BACKEND"]),
        **changes,  # type: ignore[arg-type]
    )


def outcome(result: object) -> dict[str, object]:
    r = result.__dict__
    return {"state": r["state"].value, "reason": r["reason"] and r["reason"].value,
            "value": r["value"], "history": r["history"], "message": r["message"][:500],
            "config_hash": r["config_hash"], "param_count": r["param_count"],
            "engine": r["engine"], "engine_fallback": str(r["engine_fallback"])}


def main() -> None:
    # The runner is made before anything imports Keras, as on a worker.
    mlp = TrialRunner(job("digits_mlp.json", "clonesweep.datasets:digits",
                          gpu_memory_fraction=0.25))
    import keras

    out: dict[str, object] = {"backend": keras.backend.backend(),
                              "env": {k: os.environ.get(k) for k in (
                                  "XLA_PYTHON_CLIENT_PREALLOCATE",
                                  "XLA_PYTHON_CLIENT_MEM_FRACTION")}}
    params = {"layers.hidden.units": 24, "optimizer.learning_rate": 0.02}
    first = mlp.run(TrialSpec(0, params, seed=11), Recorder())
    again = mlp.run(TrialSpec(1, params, seed=11), Recorder())
    other = mlp.run(TrialSpec(2, params, seed=12), Recorder())
    pruned_reporter = Recorder(prune_from=0)
    pruned = mlp.run(TrialSpec(3, params, seed=13), pruned_reporter)
    out["mlp"] = [outcome(r) for r in (first, again, other, pruned)]
    out["pruned_steps"] = pruned_reporter.steps
    best = mlp.best_model(0) or mlp.best_model(1) or mlp.best_model(2)
    if best is not None:
        with zipfile.ZipFile(io.BytesIO(best)) as archive:
            out["best_model_files"] = sorted(archive.namelist())
    cnn = TrialRunner(job("digits_cnn.json", "clonesweep.datasets:digits_images",
                          keep_best=False))
    out["cnn"] = [outcome(cnn.run(TrialSpec(0, {}, seed=5), Recorder()))]
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
