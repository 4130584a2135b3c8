"""The kept best model follows the study's own answer, and the run folder never contradicts it.

The answer is Optuna's: ``study.best_trial`` (feasible trials only under constraints) or, for
several objectives, ``study.best_trials`` (the feasible Pareto front). When a sweep ends the
driver fetches each answer trial's ``.keras`` model from the worker that kept it
(:mod:`clonesweep.workers.keeper`) and writes:

* one objective: ``best.keras``, with ``best.json`` naming its trial;
* several objectives: one ``pareto/trial-NNNNN.keras`` per front trial (there is no single
  best to pick: see ``clonesweep best``), with ``pareto/front.json`` listing them.

A model no worker holds any more (its node is gone, or an earlier driver trained it) is kept
only if the file on disk is already that trial's; otherwise the stale file is moved to
``trials/NNNNN.keras`` (still the model of the trial it came from) and the outcome names the
missing trial with the command that retrains it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna

from clonesweep.orchestrator.runfolder import RunFolder
from clonesweep.spec.model import SweepSpec

__all__ = ["KeptModels", "answer", "keep", "on_disk"]

BEST = "best.keras"
_BEST_META = "best.json"
_FRONT = "pareto"
_FRONT_META = "pareto/front.json"


class _Fetches(Protocol):
    def fetch_model(self, number: int) -> bytes | None: ...


@dataclass(frozen=True)
class KeptModels:
    """Where the answer's models are.

    Attributes:
        best_model: ``best.keras`` (one objective) if it holds the best trial's model.
        front_models: Front trial number -> its model file (several objectives).
        missing: Answer trials whose model is not kept anywhere.
    """

    best_model: Path | None = None
    front_models: dict[int, Path] = field(default_factory=dict)
    missing: tuple[int, ...] = ()

    def hint(self, file: Path | str) -> str | None:
        """One line on how to get a missing model (None when none is missing)."""
        if not self.missing:
            return None
        n = self.missing[0]
        more = f" (and trials {list(self.missing[1:])})" if len(self.missing) > 1 else ""
        return (f"trial {n}'s model was not kept (its worker is gone){more}: "
                f"`clonesweep repro {file} {n} --train --save {n:05d}.keras` retrains it")


def answer(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's best trial, or its Pareto front; feasible trials only."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.number)
    try:
        return [study.best_trial]
    except ValueError:  # no complete (feasible) trial
        return []


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _retire(root: Path, path: Path, number: int | None) -> None:
    """Move a model file that is not the answer's out of the way (never delete a model)."""
    if not path.exists():
        return
    target = root / "trials" / (f"{number:05d}.keras" if number is not None
                                else f"{path.stem}.unknown.keras")
    target.parent.mkdir(parents=True, exist_ok=True)
    path.replace(target)


def keep(backend: _Fetches, folder: RunFolder, study: optuna.Study) -> KeptModels:
    """Write the answer's models from the workers; return where they are."""
    trials = answer(study)
    if len(study.directions) > 1:
        return _keep_front(backend, folder, trials)
    root, meta = folder.root, _read(folder.root / _BEST_META) or {}
    on_file = meta.get("number")
    if not trials:
        return KeptModels()
    number = trials[0].number
    data = backend.fetch_model(number)
    if data:
        if on_file != number:
            _retire(root, root / BEST, on_file)
        path = folder.write_bytes(BEST, data)
        folder.write_json(_BEST_META, {"number": number,
                                       "config_hash": trials[0].user_attrs.get("config_hash")})
        return KeptModels(best_model=path)
    if on_file == number and (root / BEST).exists():
        return KeptModels(best_model=root / BEST)
    _retire(root, root / BEST, on_file)
    (root / _BEST_META).unlink(missing_ok=True)
    return KeptModels(missing=(number,))


def _keep_front(backend: _Fetches, folder: RunFolder,
                trials: list[optuna.trial.FrozenTrial]) -> KeptModels:
    root = folder.root
    before = {int(n) for n in (_read(root / _FRONT_META) or [])}
    models: dict[int, Path] = {}
    missing = []
    for t in trials:
        name = f"{_FRONT}/trial-{t.number:05d}.keras"
        data = backend.fetch_model(t.number)
        if data:
            models[t.number] = folder.write_bytes(name, data)
        elif t.number in before and (root / name).exists():
            models[t.number] = root / name
        else:
            missing.append(t.number)
    for n in before - set(models):  # left the front: keep the model as its trial's
        _retire(root, root / f"{_FRONT}/trial-{n:05d}.keras", n)
    folder.write_json(_FRONT_META, sorted(models))
    return KeptModels(front_models=models, missing=tuple(missing))


def on_disk(spec: SweepSpec, study: optuna.Study) -> KeptModels:
    """Where the answer's models are, read without fetching or moving anything."""
    root, trials = spec.run_folder, answer(study)
    if len(study.directions) > 1:
        listed = {int(n) for n in (_read(root / _FRONT_META) or [])}
        models = {t.number: root / f"{_FRONT}/trial-{t.number:05d}.keras" for t in trials
                  if t.number in listed}
        models = {n: p for n, p in models.items() if p.exists()}
        return KeptModels(front_models=models,
                          missing=tuple(t.number for t in trials if t.number not in models))
    if not trials:
        return KeptModels()
    meta = _read(root / _BEST_META) or {}
    if meta.get("number") == trials[0].number and (root / BEST).exists():
        return KeptModels(best_model=root / BEST)
    return KeptModels(missing=(trials[0].number,))
