"""Look inside a finished sweep: a trial's exact config, diffs keyed by search-space paths,
and reproductions of a trial from what the study stored.

Everything a trial needs to be rebuilt is in the study: the base config and its hash (study
attributes), the params and the trial's root seed (from which every other seed derives),
and, per trial, the config hash, the versions its worker ran with and a fingerprint of its
data. The run folder is not needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import optuna

from clonesweep.errors import SpecError, StudyError
from clonesweep.spec.configpaths import index_layers
from clonesweep.spec.model import SweepSpec
from clonesweep.spec.searchspace import config_params
from clonesweep.workers.materialize import Materialized, canonical_hash, materialize

__all__ = ["Change", "StoredTrial", "config_diff", "stored_trial", "trial_diff"]


@dataclass(frozen=True)
class Change:
    """One difference: ``path`` is a search-space path (``layers.hidden.units``)."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class StoredTrial:
    """A trial as the study recorded it, with its config materialized again."""

    trial: optuna.trial.FrozenTrial
    base_config: dict[str, Any]
    params: dict[str, Any]
    seed: int
    materialized: Materialized

    @property
    def stored_hash(self) -> str:
        return str(self.trial.user_attrs.get("config_hash", ""))


def _base_config(study: optuna.Study, structure: str | None = None) -> dict[str, Any]:
    attrs = study.user_attrs
    if structure is not None:
        # Structural search: each structure's base config is stored once, keyed by its hash.
        stored = attrs.get(f"structure_config:{structure}")
        if stored is None:
            raise StudyError(f"study {study.study_name!r} lacks the base config of structure "
                             f"{structure}")
        config: dict[str, Any] = json.loads(stored)
        if canonical_hash(config) != structure:
            raise StudyError(f"the stored base config of structure {structure} does not "
                             "match its hash: the study was altered")
        return config
    if "base_config" not in attrs:
        raise StudyError(f"study {study.study_name!r} holds no base config; it was not "
                         "written by this version of clonesweep")
    base: dict[str, Any] = json.loads(attrs["base_config"])
    if canonical_hash(base) != attrs.get("base_config_hash"):
        raise StudyError(f"the base config stored with study {study.study_name!r} does not "
                         "match its recorded hash: the study was altered")
    return base


def stored_trial(study: optuna.Study, number: int, *, file: str = "") -> StoredTrial:
    """The trial ``number`` of ``study``, its config materialized from the stored base config."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise SpecError(f"the study has no trial {number}", file=file or None, field="TRIAL",
                        value=number, hint=f"trials are numbered 0..{max(trials, default=-1)}")
    trial = trials[number]
    if "seed" not in trial.user_attrs:
        raise StudyError(f"trial {number} has no recorded seed")
    # switch.* keys were consumed by the driver (conditions), and so were model.* keys when
    # they were a factory's arguments (the trial then names its structure).
    params = config_params({**trial.params, **study.user_attrs.get("fixed_params", {})},
                           structural=trial.user_attrs.get("structure") is not None)
    seed = int(trial.user_attrs["seed"])
    base = _base_config(study, trial.user_attrs.get("structure"))
    return StoredTrial(trial, base, params, seed, materialize(base, params, seed))


def _walk(node: Any, prefix: str) -> dict[str, Any]:
    """Flatten a config tree to ``prefix.key.key`` -> leaf (lists by index)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_walk(value, f"{prefix}.{key}"))
        return out
    if isinstance(node, list):
        out = {}
        for i, value in enumerate(node):
            out.update(_walk(value, f"{prefix}.{i}"))
        return out
    return {prefix: node}


def config_diff(before: dict[str, Any], after: dict[str, Any], *,
                seeds: bool = False) -> list[Change]:
    """Differences between two model configs, keyed like the search space.

    Each layer's ``config`` is compared entry by entry (``layers.<layer>.<key>...``); a layer
    only in one of them shows as a whole. Seeds differ between any two trials, so they are
    left out unless ``seeds`` is set.
    """
    a, b = index_layers(before), index_layers(after)
    changes: list[Change] = []
    for path in [*a, *(p for p in b if p not in a)]:
        if path not in b or path not in a:
            changes.append(Change(f"layers.{path}", a.get(path, {}).get("class_name"),
                                  b.get(path, {}).get("class_name")))
            continue
        left = _walk(a[path].get("config", {}), f"layers.{path}")
        right = _walk(b[path].get("config", {}), f"layers.{path}")
        for key in [*left, *(k for k in right if k not in left)]:
            if not seeds and key.rsplit(".", 1)[-1] == "seed":
                continue
            if left.get(key) != right.get(key):
                changes.append(Change(key, left.get(key), right.get(key)))
    return changes


def _training_values(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    tr = spec.training
    values: dict[str, Any] = {f"optimizer.{k}": v for k, v in tr.optimizer_config.items()}
    values.update({"train.batch_size": tr.batch_size, "train.epochs": tr.epochs,
                   "train.steps_per_execution": tr.steps_per_execution})
    values.update({k: v for k, v in params.items() if k.startswith(("optimizer.", "train."))})
    return values


def trial_diff(spec: SweepSpec, study: optuna.Study, number: int, other: int | None = None,
               *, seeds: bool = False) -> list[Change]:
    """Trial ``number`` against the base model (or against trial ``other``)."""
    mine = stored_trial(study, number, file=str(spec.file))
    if other is None:
        theirs_config, theirs_params = mine.base_config, {}
    else:
        theirs = stored_trial(study, other, file=str(spec.file))
        theirs_config, theirs_params = theirs.materialized.config, theirs.params
    changes = config_diff(theirs_config, mine.materialized.config, seeds=seeds)
    left = _training_values(spec, theirs_params)
    right = _training_values(spec, mine.params)
    for key in [*left, *(k for k in right if k not in left)]:
        if left.get(key) != right.get(key):
            changes.append(Change(key, left.get(key), right.get(key)))
    return changes
