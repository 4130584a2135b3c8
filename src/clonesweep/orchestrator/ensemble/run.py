"""Ensembles of independently seeded clones: run the members, score them, export them.

Member ``i`` is trial ``i`` of its own Optuna study (``<sweep name>-ensemble`` by default, in
the sweep's storage) with the same params for every member and member seed
``derive_seed(ensemble_seed, "member", i)``, from which the worker derives a distinct seed for
every initializer, every seeded layer and the data order. Members run in parallel on the
backend's workers, one trial each, or (``fused=True``) in fused groups, one group per worker:
on TensorFlow's stacked engine (:mod:`clonesweep.workers.engines.fused`) for the Dense-only
Sequential models it covers, else on JAX (:mod:`clonesweep.workers.engines.jaxgroup`, any
model; the job asks the backend for workers started with ``KERAS_BACKEND=jax``); members a
worker cannot fuse train one by one, and the outcome says why. Failed members are retried
per ``sweep.retries`` (only retryable reasons) by the same loop as a sweep's trials
(:mod:`clonesweep.orchestrator.ensemble.members`); the outcome always says how many members
the ensemble holds. The driver is the study's only writer.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from clonesweep.errors import SpecError, StudyError, SweepFailed
from clonesweep.orchestrator import trialrecord
from clonesweep.orchestrator.ensemble.members import (
    Member,
    MemberBackend,
    MemberPolicy,
    asker,
    member_seed,
)
from clonesweep.orchestrator.loop import Loop
from clonesweep.orchestrator.runfolder import RunFolder
from clonesweep.orchestrator.search import monitored_objective
from clonesweep.orchestrator.study.plugins import fixed_params
from clonesweep.orchestrator.study.storage import (
    load_study,
    mask_url,
    open_study,
    storage_url,
    study_exists_at,
)
from clonesweep.orchestrator.sweep import worker_job
from clonesweep.orchestrator.trackers import Trackers
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import TrialSpec, TrialState
from clonesweep.workers.engines.fused import fusion_blocker
from clonesweep.workers.materialize import materialize

__all__ = [
    "EnsembleOutcome",
    "EnsembleRequest",
    "Member",
    "MemberBackend",
    "check_study_unused",
    "member_seed",
    "resolve_params",
    "run_ensemble",
]


@dataclass(frozen=True)
class EnsembleRequest:
    """What to train.

    Attributes:
        members: How many members.
        seed: The ensemble seed; None: the sweep's ``sweep.seed``.
        fused: Train members fused (stacked) where the config allows it.
        study: The ensemble study's name; None: ``<sweep name>-ensemble``.
        trial: Take params from this trial of the sweep's study; ``"best"`` for its best
            trial; None: the base config with the sweep file's constant params.
    """

    members: int
    seed: int | None = None
    fused: bool = False
    study: str | None = None
    trial: int | str | None = None


@dataclass(frozen=True)
class EnsembleOutcome:
    study: str
    storage: str
    params: dict[str, Any]
    source: str
    seed: int
    fused: bool
    fused_note: str
    members: list[Member]
    wall_s: float
    retried: int = 0
    storage_url: str = field(default="", repr=False)  # unmasked: to reopen the study

    @property
    def held(self) -> list[Member]:
        return [m for m in self.members if m.output is not None and m.result is not None
                and m.result.state is TrialState.COMPLETE]


def resolve_params(spec: SweepSpec, trial: int | str | None) -> tuple[dict[str, Any], str]:
    """The members' params and a note on where they came from."""
    fixed = fixed_params(spec.parameters)
    if trial is None:
        return fixed, "the base config" + (" with the sweep file's constant params"
                                           if fixed else "")
    url = storage_url(spec)
    if not study_exists_at(url):
        raise SpecError("the sweep has no study yet", file=str(spec.file),
                        field="--from-best" if trial == "best" else "--trial", value=trial,
                        hint="run the sweep first (clonesweep run FILE), or leave out "
                             "--from-best/--trial to use the base config")
    study = load_study(spec.name, url)
    done = {t.number: t for t in study.get_trials(deepcopy=False)
            if t.state is optuna.trial.TrialState.COMPLETE}
    if trial == "best":
        if not done:
            raise SpecError("the sweep's study has no complete trial", field="--from-best",
                            file=str(spec.file))
        chosen = study.best_trial
    elif trial not in done:
        raise SpecError("no complete trial with that number in the sweep's study",
                        field="--trial", value=trial, file=str(spec.file),
                        hint=f"complete trials: {sorted(done)[:20]}")
    else:
        chosen = done[int(trial)]
    # What the trial trained (otherwise values included); switch.* states chose them.
    record = trialrecord.read_in(study, chosen, spec.parameters)
    params = record.config_params
    structural = sorted(f"model.{k}" for k in record.structure_args)
    if structural:
        raise SpecError("ensembles of a structural-search trial are not supported yet "
                        f"(its params {structural} choose the factory's arguments)",
                        field="--from-best" if trial == "best" else "--trial", value=trial,
                        file=str(spec.file),
                        hint="give the factory those arguments as defaults and run the "
                             "ensemble from the base config")
    return params, f"trial {chosen.number} of study {spec.name!r}"


# --- ux: a used ensemble study is refused before Ray starts (it took ~9 s to say so) ---
def check_study_unused(spec: SweepSpec, name: str) -> None:
    """Refuse an ensemble study that already holds trials, reading only what exists: a
    storage file that is not there yet is not created.

    Raises:
        SpecError: the study ``name`` exists in the sweep's storage and holds trials.
    """
    url = storage_url(spec)
    if not study_exists_at(url):
        return
    try:
        study = load_study(name, url)
    except StudyError:
        return  # no such study yet (or no storage): _open creates it, or says why not
    if study.get_trials(deepcopy=False):
        raise SpecError(f"the ensemble study {name!r} already holds trials",
                        field="--study", value=name,
                        hint="name a new study with --study NAME (each ensemble run is a "
                             "study of its own)")
# --- end ux ---


def _open(spec: SweepSpec, name: str, seed: int) -> tuple[str, optuna.Study]:
    url = storage_url(spec)
    # One direction: a member's value is the objective its worker monitors (the first
    # trained metric of a multi-objective sweep).
    objective = monitored_objective(spec)
    study = open_study(dataclasses.replace(spec, name=name, objective=objective,
                                           objectives=(objective,)), url,
                       optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner())
    if study.get_trials(deepcopy=False):
        raise SpecError(f"the ensemble study {name!r} already holds trials",
                        field="--study", value=name,
                        hint="name a new study with --study NAME (each ensemble run is a "
                             "study of its own)")
    return url, study


def run_ensemble(spec: SweepSpec, base_config: dict[str, Any], backend: MemberBackend,
                 request: EnsembleRequest,
                 on_member: Callable[[Member, bool], None] | None = None) -> EnsembleOutcome:
    """Train ``request.members`` seeded clones and return them with their outputs.

    ``on_member(member, retried)`` is called (in this thread) whenever a member ends or is
    retried. Scoring and export: :func:`clonesweep.orchestrator.ensemble.export.finish`.

    Raises:
        SpecError: bad source trial, or an ensemble study that already holds trials.
        SweepFailed: the workers cannot start.
    """
    started = time.monotonic()
    seed = spec.sweep.seed if request.seed is None else request.seed
    params, source = resolve_params(spec, request.trial)
    mat = materialize(base_config, params, seed)  # bad params fail here, before any work
    note, on_jax = "", False
    if request.fused:
        # The TensorFlow stacked engine where it covers the model (Dense-only Sequential
        # models); every other model fused on JAX, on workers started with KERAS_BACKEND=jax.
        settings = {**spec.training.optimizer_config, **mat.optimizer}
        on_jax = fusion_blocker(mat.config, settings, spec.objective.metric) is not None
    fused = request.fused
    name = request.study or f"{spec.name}-ensemble"
    n = request.members
    slots = min(spec.sweep.parallel, n)
    # Members are never pruned: their per-epoch reports need no answer.
    job = dataclasses.replace(worker_job(spec, base_config), keep_best=False,
                              keep_members=True, await_pruning=False)
    if on_jax:
        job = dataclasses.replace(job, keras_backend="jax")
    if job.checkpoint_dir is not None:  # members are numbered in the ensemble's own study
        job = dataclasses.replace(job, checkpoint_dir=str(Path(job.checkpoint_dir) / name))
    check_study_unused(spec, name)  # ux: refused before any worker starts
    # A tracker whose library is missing is refused here, before anything exists.
    trackers = Trackers.of(spec)
    if not spec.run_folder.exists():  # the default SQLite study lives there
        RunFolder(spec.run_folder).create(spec.file, base_config)
    backend.start(job, slots)
    try:
        url, study = _open(spec, name, seed)
        # Work is keyed by member index; each member's trial is asked right after the first
        # wave is submitted, so the asks overlap the workers' first training.
        members = [Member(i, None, TrialSpec(i, dict(params), member_seed(seed, i)))
                   for i in range(n)]
        policy = MemberPolicy(study, backend, members, slots if fused else 0,
                               asker(study, params, seed, source),
                               on_member or (lambda m, r: None), trackers)
        loop = Loop(backend, policy, retries=spec.sweep.retries)
        loop.run()
    finally:
        backend.shutdown()
        if trackers is not None:
            trackers.close()
    if policy.group_notes:  # a worker found what the config alone did not show
        note, fused = "; ".join(sorted(set(policy.group_notes))), False
    return EnsembleOutcome(name, mask_url(url), params, source, seed, fused, note, members,
                           time.monotonic() - started, loop.retried, storage_url=url)


def check_targets(members: list[Member]) -> Any:
    """The validation targets every held member was scored on (they must be the same).

    Raises:
        SweepFailed: members saw different validation data.
    """
    from clonesweep.workers.arrays import data_fingerprint, length

    held = [m for m in members if m.output is not None and length(m.output.y_val)]
    if not held:
        raise SweepFailed("no member of the ensemble completed")
    first = held[0].output
    assert first is not None
    targets = data_fingerprint(first.y_val)  # dtypes, shapes and bytes, any structure
    for m in held[1:]:
        assert m.output is not None
        if data_fingerprint(m.output.y_val) != targets:
            raise SweepFailed("members saw different validation targets: the data loader "
                              "must return the same split in every process (seed it)")
    return first.y_val


def member_file(folder: Path, index: int) -> Path:
    return folder / "members" / f"member-{index:02d}.keras"
