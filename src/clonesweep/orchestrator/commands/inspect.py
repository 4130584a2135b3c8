"""Look inside a finished sweep: a trial's exact config, diffs keyed by search-space paths,
and reproductions of a trial from what the study stored.

Everything a trial needs to be rebuilt is in the study: the base config and its hash (study
attributes), the params and the trial's root seed (from which every other seed derives),
and, per trial, the config hash, the versions its worker ran with and a fingerprint of its
data. The run folder is not needed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import optuna

from clonesweep.errors import SpecError, StudyError
from clonesweep.orchestrator import trialrecord
from clonesweep.orchestrator.trialrecord import TrialRecord
from clonesweep.spec.configpaths import index_layers
from clonesweep.spec.model import ParamSpec, SweepSpec
from clonesweep.workers.materialize import Materialized, canonical_hash, materialize

__all__ = ["ABSENT", "DEFAULT", "Change", "StoredTrial", "config_diff", "stored_trial",
           "trial_diff"]


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
    record: TrialRecord

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


def stored_trial(study: optuna.Study, number: int, *, file: str = "",
                 parameters: tuple[ParamSpec, ...] | None = None) -> StoredTrial:
    """The trial ``number`` of ``study``, its config materialized from the stored base config
    and its record (:mod:`clonesweep.orchestrator.trialrecord`); ``parameters`` (the sweep
    file's) replay the conditions for a study that predates the record."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise SpecError(f"the study has no trial {number}", file=file or None, field="TRIAL",
                        value=number, hint=f"trials are numbered 0..{max(trials, default=-1)}")
    trial = trials[number]
    record = trialrecord.read_in(study, trial, parameters)
    if record.seed is None:
        raise StudyError(f"trial {number} has no recorded seed")
    params = record.config_params
    base = _base_config(study, record.structure)
    return StoredTrial(trial, base, params, record.seed,
                       materialize(base, params, record.seed), record)


class _Unset:
    """A side of a change where the key does not exist (a layer only in one model, a setting
    the sweep file leaves to Keras): shown as its label, never as a value of None."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __repr__(self) -> str:
        return self.label

    __str__ = __repr__


#: A layer or config entry that exists on one side only.
ABSENT = _Unset("(absent)")
#: An optimizer setting, or a factory argument, the sweep file does not set.
DEFAULT = _Unset("(default)")


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


def _snake(class_name: str) -> str:
    """Keras's default layer name for a class (``InputLayer`` -> ``input_layer``)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", class_name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _stable_names(index: dict[str, dict[str, Any]]) -> dict[str, tuple[dict[str, Any], bool]]:
    """Re-key layers whose name Keras generated (``dense_7``, ``input_layer_1``: a counter
    that depends on what the process built before) by class and order: the first Dense is
    ``dense``, the second ``dense#2``. Values: (entry, whether the name was generated)."""
    seen: dict[tuple[str, str], int] = {}
    out: dict[str, tuple[dict[str, Any], bool]] = {}
    for path, entry in index.items():
        prefix, slash, name = path.rpartition("/")
        snake = _snake(str(entry.get("class_name", "")))
        generated = bool(snake) and re.fullmatch(rf"{re.escape(snake)}(_\d+)?", name) is not None
        if generated:
            n = seen[(prefix, snake)] = seen.get((prefix, snake), 0) + 1
            name = snake if n == 1 else f"{snake}#{n}"
        out[prefix + slash + name] = (entry, generated)
    return out


def config_diff(before: dict[str, Any], after: dict[str, Any], *,
                seeds: bool = False) -> list[Change]:
    """Differences between two model configs, keyed like the search space.

    Each layer's ``config`` is compared entry by entry (``layers.<layer>.<key>...``); a layer
    only in one of them shows as a whole (its class against :data:`ABSENT`). Layers named by
    Keras's counter are matched by class and order, not by the counter. Seeds differ between
    any two trials, so they are left out unless ``seeds`` is set.
    """
    a, b = _stable_names(index_layers(before)), _stable_names(index_layers(after))
    changes: list[Change] = []
    for path in [*a, *(p for p in b if p not in a)]:
        if path not in b or path not in a:
            changes.append(Change(f"layers.{path}",
                                  a[path][0].get("class_name") if path in a else ABSENT,
                                  b[path][0].get("class_name") if path in b else ABSENT))
            continue
        generated = a[path][1] or b[path][1]
        left = _walk(a[path][0].get("config", {}), f"layers.{path}")
        right = _walk(b[path][0].get("config", {}), f"layers.{path}")
        for key in [*left, *(k for k in right if k not in left)]:
            last = key.rsplit(".", 1)[-1]
            if (not seeds and last == "seed") or (generated and key == f"layers.{path}.name"):
                continue
            if left.get(key, ABSENT) != right.get(key, ABSENT):
                changes.append(Change(key, left.get(key, ABSENT), right.get(key, ABSENT)))
    return changes


def _keyed_changes(left: dict[str, Any], right: dict[str, Any], missing: Any) -> list[Change]:
    return [Change(k, left.get(k, missing), right.get(k, missing))
            for k in [*left, *(k for k in right if k not in left)]
            if left.get(k, missing) != right.get(k, missing)]


def _training_values(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    tr = spec.training
    values: dict[str, Any] = {f"optimizer.{k}": v for k, v in tr.optimizer_config.items()}
    values.update({"train.batch_size": tr.batch_size, "train.epochs": tr.epochs,
                   "train.steps_per_execution": tr.steps_per_execution})
    values.update({k: v for k, v in params.items() if k.startswith(("optimizer.", "train."))})
    return values


def trial_diff(spec: SweepSpec, study: optuna.Study, number: int, other: int | None = None,
               *, seeds: bool = False) -> list[Change]:
    """What trial ``number`` trained against the sweep's base (the file's model and training
    block) or against trial ``other``: structure arguments (``model.*``) first, then
    ``switch.*`` states (between trials), layer keys, and optimizer and training keys.

    A structural trial is compared with the base model, not with its own structure; a key
    set on one side only shows :data:`ABSENT` or :data:`DEFAULT` on the other.
    """
    from clonesweep.orchestrator.model import base_factory_args

    mine = stored_trial(study, number, file=str(spec.file), parameters=spec.parameters)
    changes: list[Change] = []
    if other is None:
        base_args = base_factory_args(spec) if spec.structural else {}
        theirs_args, theirs_switches = {f"model.{k}": v for k, v in base_args.items()}, {}
        theirs_config, theirs_params = _base_config(study), {}
    else:
        theirs = stored_trial(study, other, file=str(spec.file), parameters=spec.parameters)
        theirs_args = {f"model.{k}": v for k, v in theirs.record.structure_args.items()}
        theirs_switches = theirs.record.switches
        theirs_config, theirs_params = theirs.materialized.config, theirs.params
    mine_args = {f"model.{k}": v for k, v in mine.record.structure_args.items()}
    changes += _keyed_changes(theirs_args, mine_args, DEFAULT)
    if other is not None:
        changes += _keyed_changes(theirs_switches, mine.record.switches, ABSENT)
    changes += config_diff(theirs_config, mine.materialized.config, seeds=seeds)
    changes += _keyed_changes(_training_values(spec, theirs_params),
                              _training_values(spec, mine.params), DEFAULT)
    return changes
