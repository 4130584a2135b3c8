"""Ensembles of independently seeded clones: run the members, score them, export them.

Member ``i`` is trial ``i`` of its own Optuna study (``<sweep name>-ensemble`` by default, in
the sweep's storage) with the same params for every member and member seed
``derive_seed(ensemble_seed, "member", i)``, from which the worker derives a distinct seed for
every initializer, every seeded layer and the data order. Members run in parallel on the
backend's workers, one trial each, or (``fused=True``) in fused groups, one group per worker
(:mod:`clonesweep.workers.engines.fused`); a config that cannot be fused runs unfused, and the
outcome says why. Failed members are retried per ``sweep.retries`` (only retryable reasons); the
outcome always says how many members the ensemble holds. The driver is the study's only
writer.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import optuna

from clonesweep.errors import SpecError, SweepFailed
from clonesweep.orchestrator.backends.base import Backend
from clonesweep.orchestrator.runfolder import RunFolder
from clonesweep.orchestrator.search import monitored_objective
from clonesweep.orchestrator.study.storage import (
    finish_trials,
    fixed_params,
    load_study,
    mask_url,
    open_study,
    storage_url,
)
from clonesweep.orchestrator.sweep import worker_job
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import FailReason, Intermediate, TrialResult, TrialSpec, TrialState
from clonesweep.workers.engines.fused import fusion_blocker
from clonesweep.workers.materialize import materialize
from clonesweep.workers.member import FusedGroup, MemberOutput
from clonesweep.workers.seeding import derive_seed

__all__ = [
    "EnsembleOutcome",
    "EnsembleRequest",
    "Member",
    "MemberBackend",
    "member_seed",
    "resolve_params",
    "run_ensemble",
]


class MemberBackend(Backend, Protocol):
    """A :class:`~clonesweep.orchestrator.backends.base.Backend` that also keeps members.

    Started with ``WorkerJob(keep_members=True)``. ``submit_fused`` takes a free slot like
    ``submit`` and yields one result numbered ``group.number``; ``fetch_member(number)``
    returns a completed member's :class:`~clonesweep.workers.member.MemberOutput` once
    (after its own result, or its group's, has been polled), else None.
    """

    def submit_fused(self, group: FusedGroup) -> None: ...

    def fetch_member(self, number: int) -> MemberOutput | None: ...


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


@dataclass
class Member:
    """One member's state from ask to tell (and what it left)."""

    index: int
    trial: optuna.trial.Trial | None  # None until asked (after its work was submitted)
    spec: TrialSpec
    result: TrialResult | None = None
    output: MemberOutput | None = None

    @property
    def number(self) -> int:
        """The member's trial number in the ensemble study (its index until asked)."""
        return self.trial.number if self.trial is not None else self.spec.number


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


def member_seed(ensemble_seed: int, index: int) -> int:
    """Member ``index``'s root seed: ``derive_seed(ensemble_seed, "member", index)``."""
    return derive_seed(ensemble_seed, "member", index)


def resolve_params(spec: SweepSpec, trial: int | str | None) -> tuple[dict[str, Any], str]:
    """The members' params and a note on where they came from."""
    fixed = fixed_params(spec.parameters)
    if trial is None:
        return fixed, "the base config" + (" with the sweep file's constant params"
                                           if fixed else "")
    url = storage_url(spec)
    if spec.sweep.storage is None and not (spec.run_folder / "study.db").exists():
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
    params = {**chosen.params, **study.user_attrs.get("fixed_params", {})}
    structural = sorted(k for k in params if k.startswith("model."))
    if structural:
        raise SpecError("ensembles of a structural-search trial are not supported yet "
                        f"(its params {structural} choose the factory's arguments)",
                        field="--from-best" if trial == "best" else "--trial", value=trial,
                        file=str(spec.file),
                        hint="give the factory those arguments as defaults and run the "
                             "ensemble from the base config")
    return params, f"trial {chosen.number} of study {spec.name!r}"


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


def _asker(study: optuna.Study, params: dict[str, Any], seed: int,
           source: str) -> Callable[[Member], None]:
    """Records a member as a running trial of the ensemble study (sets ``member.trial``).

    The trial is created with its params and attributes in one storage write (Optuna's
    ``create_new_trial`` with a template): nothing is sampled, so ``study.ask``'s sampler calls
    and its one write per param and per attribute are not needed (on SQLite ~10 ms of the
    driver's CPU per member instead of ~28).
    """
    primitives = {k: v for k, v in params.items()
                  if v is None or isinstance(v, (bool, int, float, str))}
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        k: optuna.distributions.CategoricalDistribution([v]) for k, v in primitives.items()}

    def ask(member: Member) -> None:
        template = optuna.trial.FrozenTrial(
            number=-1, state=optuna.trial.TrialState.RUNNING, value=None,
            datetime_start=datetime.datetime.now(), datetime_complete=None,
            params=primitives, distributions=dists, system_attrs={}, intermediate_values={},
            user_attrs={"member_index": member.index, "member_seed": member.spec.seed,
                        "ensemble_seed": seed, "params": params, "source": source},
            trial_id=-1)
        trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
        member.trial = optuna.trial.Trial(study, trial_id)

    return ask


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
    note = ""
    if request.fused:
        settings = {**spec.training.optimizer_config, **mat.optimizer}
        blocker = fusion_blocker(mat.config, settings, spec.objective.metric)
        note = f"fused training does not apply: {blocker}; members train separately" \
            if blocker else ""
    fused = request.fused and not note
    name = request.study or f"{spec.name}-ensemble"
    n = request.members
    slots = min(spec.sweep.parallel, n)
    # Members are never pruned: their per-epoch reports need no answer.
    job = dataclasses.replace(worker_job(spec, base_config), keep_best=False,
                              keep_members=True, await_pruning=False)
    if job.checkpoint_dir is not None:  # members are numbered in the ensemble's own study
        job = dataclasses.replace(job, checkpoint_dir=str(Path(job.checkpoint_dir) / name))
    if not spec.run_folder.exists():  # the default SQLite study lives there
        RunFolder(spec.run_folder).create(spec.file, base_config)
    backend.start(job, slots)
    try:
        url, study = _open(spec, name, seed)
        # Work is keyed by member index; each member's trial is asked right after the first
        # wave is submitted, so the asks overlap the workers' first training.
        members = [Member(i, None, TrialSpec(i, dict(params), member_seed(seed, i)))
                   for i in range(n)]
        loop = _Loop(study, backend, spec.sweep.retries, on_member or (lambda m, r: None),
                     _asker(study, params, seed, source))
        try:
            loop.run(members, slots if fused else 0)
        except BaseException:
            _abandon(study, members)
            raise
    finally:
        backend.shutdown()
    if loop.group_notes:  # a worker found what the config alone did not show
        note, fused = "; ".join(sorted(set(loop.group_notes))), False
    return EnsembleOutcome(name, mask_url(url), params, source, seed, fused, note, members,
                           time.monotonic() - started, loop.retried, storage_url=url)


def _abandon(study: optuna.Study, members: list[Member]) -> None:
    """On an interrupt or a crash: record every member still running as failed."""
    for member in members:
        if member.result is None and member.trial is not None:
            try:
                member.trial.set_user_attr("fail_reason", "interrupted")
                study.tell(member.trial, state=optuna.trial.TrialState.FAIL)
            except Exception:  # storage gone too: nothing more can be recorded
                pass


class _Loop:
    def __init__(self, study: optuna.Study, backend: MemberBackend, retries: int,
                 on_member: Callable[[Member, bool], None],
                 ask: Callable[[Member], None]) -> None:
        self.study, self.backend, self.retries = study, backend, retries
        self.on_member, self.ask = on_member, ask
        self.retried = 0
        self.group_notes: list[str] = []

    def run(self, members: list[Member], groups: int) -> None:
        by_number = {m.spec.number: m for m in members}
        todo: list[TrialSpec | FusedGroup]
        if groups:
            size = -(-len(members) // groups)
            todo = [FusedGroup(chunk[0].spec.number, tuple(m.spec for m in chunk))
                    for chunk in (members[i:i + size] for i in range(0, len(members), size))]
        else:
            todo = [m.spec for m in members]
        inflight: dict[int, TrialSpec | FusedGroup] = {}
        asked = False
        while todo or inflight:
            while todo and self.backend.free_slots() > 0:
                item = todo.pop(0)
                inflight[item.number] = item
                if isinstance(item, FusedGroup):
                    self.backend.submit_fused(item)
                else:
                    self.backend.submit(item)
            if not asked:  # once, after the first wave, before any result is polled
                for member in members:
                    self.ask(member)
                asked = True
            for event in self.backend.poll(0.5):
                if isinstance(event, Intermediate):
                    self.backend.answer(event, False)  # members are never pruned
                    continue
                item = inflight.pop(event.number)
                again = self._ended(item, event, by_number)
                if again is not None:
                    todo.insert(0, again)

    def _ended(self, item: TrialSpec | FusedGroup, result: TrialResult,
               by_number: dict[int, Member]) -> TrialSpec | FusedGroup | None:
        if (result.state is TrialState.FAIL and result.reason is not None
                and result.reason.retryable and item.attempt < self.retries):
            self.retried += 1
            again = item.retry()
            for spec in (again.members if isinstance(again, FusedGroup) else (again,)):
                by_number[spec.number].spec = spec
                self.on_member(by_number[spec.number], True)
            return again
        if isinstance(item, FusedGroup):
            if result.state is TrialState.COMPLETE and result.engine_fallback is not None:
                self.group_notes.append(result.message)
            told = []
            for spec in item.members:
                out = (self.backend.fetch_member(spec.number)
                       if result.state is TrialState.COMPLETE else None)
                own = out.result if out is not None and out.result is not None else \
                    TrialResult.failed(spec, result.reason or FailReason.WORKER_DIED,
                                       result.message or "the fused group failed")
                told.append((by_number[spec.number], own, out))
            self._tell(told)
        else:
            out = (self.backend.fetch_member(result.number)
                   if result.state is TrialState.COMPLETE else None)
            self._tell([(by_number[result.number], result, out)])
        return None

    def _tell(self, told: list[tuple[Member, TrialResult, MemberOutput | None]]) -> None:
        """Record members as finished: a fused group's members in one storage transaction,
        straight to the storage (the ensemble's sampler learns nothing from a member; see
        :func:`~clonesweep.orchestrator.study.storage.finish_trials`)."""
        rows = []
        for member, result, out in told:
            if result.state is TrialState.COMPLETE and out is None:
                result = dataclasses.replace(
                    result, state=TrialState.FAIL, reason=FailReason.WORKER_DIED, value=None,
                    message="the member's model was lost with its worker")
            member.result, member.output = result, out
            assert member.trial is not None  # asked before the first poll
            ok = result.state is TrialState.COMPLETE and result.value is not None
            rows.append((member.trial, {**_attributes(result),
                                        "fused": bool(out is not None and out.fused)},
                         optuna.trial.TrialState.COMPLETE if ok
                         else optuna.trial.TrialState.FAIL,
                         result.value if ok else None))
        finish_trials(self.study, rows)
        for member, _, _ in told:
            self.on_member(member, False)


def _attributes(result: TrialResult) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "state": result.state.value, "seeds": result.seeds, "config_hash": result.config_hash,
        "param_count": result.param_count, "node": result.node, "worker": result.worker,
        "attempt": result.attempt, "history": result.history,
        "build_s": round(result.timings.build_s, 4), "train_s": round(result.timings.train_s, 4),
        "eval_s": round(result.timings.eval_s, 4), "engine": result.engine,
        "engine_fallback": (str(result.engine_fallback)
                            if result.engine_fallback is not None else None),
    }
    if result.reason is not None:
        attrs["fail_reason"] = result.reason.value
    if result.message:
        attrs["message"] = result.message[-2000:]
    return attrs


def check_targets(members: list[Member]) -> np.ndarray:
    """The validation targets every held member was scored on (they must be the same).

    Raises:
        SweepFailed: members saw different validation data.
    """
    held = [m for m in members if m.output is not None and m.output.y_val.size]
    if not held:
        raise SweepFailed("no member of the ensemble completed")
    first = held[0].output
    assert first is not None
    for m in held[1:]:
        assert m.output is not None
        if m.output.y_val.shape != first.y_val.shape or not np.array_equal(m.output.y_val,
                                                                           first.y_val):
            raise SweepFailed("members saw different validation targets: the data loader "
                              "must return the same split in every process (seed it)")
    return first.y_val


def member_file(folder: Path, index: int) -> Path:
    return folder / "members" / f"member-{index:02d}.keras"
