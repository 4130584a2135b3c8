"""``clonesweep repro``: rebuild a trial from the study alone, optionally retrain it, compare."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from clonesweep.orchestrator.commands.inspect import stored_trial
from clonesweep.orchestrator.runfolder import write_atomic
from clonesweep.orchestrator.sweep import worker_job
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import TrialSpec, TrialState

__all__ = ["ReproReport", "recorded_backend", "reproduce"]


@dataclass
class ReproReport:
    """What was compared, and whether it matched.

    ``ok`` holds when the rebuilt config hash matches and, with ``--train``, the retrained
    trial ended in the same state with bitwise the same history and value. Differences in
    the environment (package versions, backend) and the data fingerprint are listed: on
    another machine or another version, bitwise equality is not expected.
    """

    number: int
    config_hash: str
    stored_config_hash: str
    hash_match: bool
    param_count: int
    environment_diff: dict[str, list[str]] = field(default_factory=dict)
    trained: bool = False
    state: str | None = None
    stored_state: str | None = None
    value: float | None = None
    stored_value: float | None = None
    history_match: bool | None = None
    data_match: bool | None = None
    saved: str | None = None

    @property
    def ok(self) -> bool:
        if not self.hash_match:
            return False
        if not self.trained:
            return True
        return bool(self.history_match) and self.state == self.stored_state and (
            self.value == self.stored_value)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class _Replay:
    """Answers pruning as the original run did: prune at the step where it was pruned."""

    def __init__(self, prune_at: int | None) -> None:
        self.prune_at = prune_at

    def report(self, step: int, value: float) -> bool:
        return self.prune_at is not None and step >= self.prune_at


def recorded_backend(study: optuna.Study, number: int) -> str | None:
    """The Keras backend trial ``number`` trained on (its recorded environment), or None
    when the study has no such trial or it predates the record.

    A reproduction retrains on that backend: ``clonesweep repro`` starts Keras with it
    unless ``KERAS_BACKEND`` says otherwise (packed trials, fused members and sweeps run
    with ``KERAS_BACKEND=jax`` train on JAX workers; the command line's own Keras would be
    TensorFlow, whose arithmetic differs).
    """
    for trial in study.get_trials(deepcopy=False):
        if trial.number == number:
            backend = trial.user_attrs.get("environment", {}).get("keras_backend")
            return str(backend) if backend else None
    return None


def reproduce(spec: SweepSpec, study: optuna.Study, number: int, *,
              train: bool = False, save: Path | None = None) -> ReproReport:
    """Rebuild trial ``number`` from the study's base config, params and seed; compare.

    ``save`` (implies ``train``): write the retrained model there as a ``.keras`` file (a
    COMPLETE trial only), e.g. the best trial's when its worker, and so its model, is gone.
    """
    from clonesweep.workers.rebuild import rebuild
    from clonesweep.workers.runner import TrialRunner

    stored = stored_trial(study, number, file=str(spec.file), parameters=spec.parameters)
    # The runner first: it sizes TensorFlow's threads like the sweep's workers did, which
    # must happen before any model is built in this process.
    # No checkpoints: a reproduction trains from epoch 0 and leaves nothing behind.
    # The runner keeps the retrained model whatever the sweep's objectives and constraints.
    job = replace(worker_job(spec, stored.base_config), checkpoint_dir=None,
                  keep_best=save is not None, keep_objectives=(), keep_constraints=())
    runner = TrialRunner(job, worker="repro")
    variant = rebuild(stored.base_config, stored.params, seed=stored.seed)
    attrs = stored.trial.user_attrs
    report = ReproReport(number, variant.materialized.config_hash, stored.stored_hash,
                         variant.materialized.config_hash == stored.stored_hash,
                         int(variant.model.count_params()))
    recorded_env = attrs.get("environment", {})
    report.environment_diff = {k: [str(recorded_env.get(k)), str(v)]
                               for k, v in runner.environment.items()
                               if recorded_env.get(k) != v}
    if not train and save is None:
        return report
    history = attrs.get("history", {})
    pruned = stored.trial.state is optuna.trial.TrialState.PRUNED
    steps = len(next(iter(history.values()), []))
    result = runner.run(TrialSpec(number, stored.params, stored.seed),
                        _Replay(steps - 1 if pruned else None))
    report.trained = True
    report.state = result.state.value
    report.stored_state = attrs.get("state")
    # A pruned trial's value in Optuna is its last reported (intermediate) value.
    last = result.history.get(spec.objective.metric, [None])[-1]
    report.value = result.value if result.state is TrialState.COMPLETE else last
    report.stored_value = stored.trial.value
    report.history_match = result.history == history
    report.data_match = result.data_fingerprint == attrs.get("data_fingerprint")
    data = runner.best_model(number) if save is not None else None
    if save is not None and data:
        write_atomic(save, data)
        report.saved = str(save)
    return report
