"""``clonesweep validate``: a dry run that refuses, before any trial exists, what cannot work.

:func:`validate_sweep` takes a loaded :class:`SweepSpec` (the loader has already checked
every key and resolved the config paths of a config/``.keras`` model) and then, creating
nothing anywhere:

1. builds the sampler and the pruner (their settings against Optuna's signatures);
2. checks the storage: a SQLite or journal file's folder is creatable and writable and an
   existing file is a study database; a server URL answers ``SELECT 1`` (password from
   ``--storage-password-file`` / ``$CLONESWEEP_STORAGE_PASSWORD``, masked in every message);
3. if the sweep's study exists, checks it can be resumed: same directions, and the search
   space its trials were sampled from
   (:func:`~clonesweep.orchestrator.study.compat.check_resume_compatible`);
4. checks that the run folder (and ``sweep.checkpoint_dir``) can be created: path lengths,
   and a folder actually made and removed where it would go (``os.access`` says yes to
   root on /proc);
5. imports ``model.imports`` and the data loader (``data=True`` also calls it and checks
   what it returns: :mod:`clonesweep.orchestrator.commands.datacheck`);
6. rebuilds the model in safe mode at every corner of the search space and counts its
   parameters (:mod:`clonesweep.orchestrator.commands.corners`), then resolves the loss,
   metrics and optimizer (at each corner's settings) as a worker's compile would.

``clonesweep run`` and ``resume`` make all of these checks, ``data=True`` included, before
they create the run folder, the study or a Ray.

Every refusal is a :class:`SpecError` (exit code 2) naming the file, the field, the value
(storage URLs masked) and a hint.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clonesweep.errors import SpecError
from clonesweep.orchestrator.commands.corners import Corner, build_corners
from clonesweep.orchestrator.commands.datacheck import check_data, check_training_names
from clonesweep.orchestrator.study.check import (
    Refuse,
    check_folder,
    check_sqlite_file,
    server_has_study,
    sqlite_has_study,
)
from clonesweep.orchestrator.study.compat import check_resume_compatible
from clonesweep.spec.model import SweepSpec
from clonesweep.spec.settings import mask_url
from clonesweep.workers.given import GIVEN_LOADER

__all__ = ["ValidationReport", "check_places", "check_resume_compatible", "check_storage",
           "validate_sweep"]


@dataclass(frozen=True)
class ValidationReport:
    """What a sweep would run with; every field is safe to print (URLs masked)."""

    name: str
    file: str
    storage: str
    study: str
    sampler: str
    pruner: str
    corners: tuple[Corner, ...]
    data: dict[str, Any] | None = field(default=None, hash=False)
    # How the sweep would pack its trials on Ray (``training.pack``; auto's decision).
    packing: str = "off"
    # What the loader returned, when arrays (``data=True`` only): see :meth:`with_data`.
    arrays: Any = field(default=None, hash=False, compare=False, repr=False)

    def with_data(self, spec: SweepSpec) -> SweepSpec:
        """``spec`` whose workers get the arrays checked here instead of calling the loader
        again: the loader runs once on the driver (``run``), however slow or random it is.
        The arrays go in a :class:`~clonesweep.workers.given.Checked` box, handed over once
        (on Ray the driver keeps no copy beside the object store's). Datasets (and a check
        without ``data=True``) leave ``spec`` as it is."""
        if self.arrays is None or spec.data.loader == GIVEN_LOADER:
            return spec
        from clonesweep.spec.model import DataSpec
        from clonesweep.workers.given import CHECKED_LOADER, Checked

        box = Checked(self.arrays, spec.data)
        return dataclasses.replace(spec, data=DataSpec(CHECKED_LOADER, {"box": box}))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "storage": self.storage,
                "study": self.study, "sampler": self.sampler, "pruner": self.pruner,
                "packing": self.packing,
                "corners": [{"label": c.label, "params": c.params,
                             "param_count": c.param_count} for c in self.corners],
                "data": self.data, "ok": True}


def validate_sweep(spec: SweepSpec, *, data: bool = False,
                   storage_field: str = "sweep.storage") -> ValidationReport:
    """Check everything a run of ``spec`` needs, without creating anything.

    Args:
        spec: The loaded sweep (its storage URL with the password filled in, if any).
        data: Also call the data loader and check what it returns.
        storage_field: The field to name when the storage is refused (``--storage`` when
            the URL came from the command line).

    Raises:
        SpecError: Whatever would make the run fail; nothing has been created.

    Example:
        >>> report = validate_sweep(load_sweep("configs/digits_mlp.yaml"))  # doctest: +SKIP
        >>> [c.param_count for c in report.corners]
        [1210, 19210]
    """
    from clonesweep.orchestrator.model import base_model_config, build_structure
    from clonesweep.orchestrator.study.plugins import make_pruner, make_sampler
    from clonesweep.orchestrator.study.storage import storage_url
    from clonesweep.workers.seeding import derive_seed

    make_sampler(spec)
    make_pruner(spec)
    url = storage_url(spec)
    field_name = storage_field if spec.sweep.storage else "sweep.run_dir"
    study = check_storage(spec, url, field_name)
    check_places(spec)
    _check_warm_start(spec, url)
    _import_modules(spec)
    base_config = base_model_config(spec)
    seed = derive_seed(spec.sweep.seed, "trial", 0)
    built = build_corners(spec, base_config, lambda args: build_structure(spec, args), seed)
    check_training_names(spec, [c.params for c in built])
    checked, arrays = None, None
    if data:
        from clonesweep.workers.rebuild import rebuild

        checked, arrays = check_data(spec, rebuild(base_config, {}, seed=seed).model)
    from clonesweep.orchestrator.packing import packing_note

    # Without --data the loader is not called: auto is told the data are arrays.
    packs = packing_note(spec, base_config, arrays=arrays is not None if data else True)
    if not data and packs.startswith("auto: on"):
        packs += " if the loader returns arrays"
    return ValidationReport(
        name=spec.name, file=str(spec.file), storage=mask_url(url), study=study,
        sampler=spec.sweep.sampler.name, pruner=spec.sweep.pruner.name,
        corners=tuple(built), data=checked, packing=packs, arrays=arrays)


# -- places --------------------------------------------------------------------------------
def check_places(spec: SweepSpec) -> None:
    """The run folder and the checkpoint folder can be created (tried, then undone)."""
    from clonesweep.spec._fields import check_path_length

    places = [("sweep.run_dir", spec.run_folder)]
    if spec.sweep.checkpoint_dir is not None:
        places.append(("sweep.checkpoint_dir", spec.sweep.checkpoint_dir / spec.name))
    for field_name, folder in places:
        check_path_length(folder / "trials" / "00000.json", file=str(spec.file),
                          field=field_name, value=str(folder))

        def refuse(problem: str, hint: str, where: str = field_name,
                   folder: Path = folder) -> SpecError:
            return SpecError(f"the {where.split('.')[-1]} {problem}", file=str(spec.file),
                             field=where, value=str(folder), hint=hint)

        check_folder(folder / "trials", refuse)


# -- storage -------------------------------------------------------------------------------
def _check_warm_start(spec: SweepSpec, url: str) -> None:
    """``sweep.enqueue_from`` names a study that exists (read without creating anything)."""
    source = spec.sweep.enqueue_from
    if source is None:
        return
    other = source.storage or url

    def refuse(problem: str, hint: str) -> SpecError:
        return SpecError(f"the warm-start storage {problem}", file=str(spec.file),
                         field="sweep.enqueue_from", value=mask_url(other), hint=hint)

    if other.startswith("sqlite:///"):
        path = Path(other[len("sqlite:///"):])
        found = path.is_file()
        if found:
            check_sqlite_file(path, refuse)
            found = sqlite_has_study(path, source.study)
    elif other.startswith("journal://"):
        found = Path(other[len("journal://"):]).is_file()
    else:
        found = server_has_study(other, source.study, refuse)
    if not found:
        raise SpecError(f"cannot warm-start from study {source.study!r}: it does not exist",
                        file=str(spec.file), field="sweep.enqueue_from", value=source.study,
                        hint=f"the study must exist in {mask_url(other)}")
    from clonesweep.orchestrator.search import warm_start

    warm_start(spec, url)  # reads the study; SpecError if it cannot


def check_storage(spec: SweepSpec, url: str, field_name: str = "sweep.storage") -> str:
    """Check that the run could open ``url``; say whether its study is new or resumed.

    Nothing is created: a missing SQLite/journal file is not opened, only its folder is
    checked; a server gets ``SELECT 1`` and, if Optuna's tables exist, a read of its study.

    Raises:
        SpecError: The storage cannot be reached or written, is not a study database, or
            holds a study of this name that this sweep cannot resume.
    """
    def refuse(problem: str, hint: str) -> SpecError:
        return SpecError(f"the storage {problem}", file=str(spec.file), field=field_name,
                         value=mask_url(url), hint=hint)

    if url.startswith(("sqlite:///", "journal://")):
        path = Path(url.split("://", 1)[1][1 if url.startswith("sqlite") else 0:])
        if str(path) == ":memory:":
            return "new (in memory)"
        check_folder(path, refuse)
        if not path.exists():
            return "new"
        if url.startswith("sqlite"):
            check_sqlite_file(path, refuse)
            if not sqlite_has_study(path, spec.name):
                return "new"
    elif not server_has_study(url, spec.name, refuse):
        return "new"
    return _check_existing_study(spec, url, refuse)


def _check_existing_study(spec: SweepSpec, url: str, refuse: Refuse) -> str:
    from clonesweep.errors import StudyError
    from clonesweep.orchestrator.study.storage import load_study

    try:
        study = load_study(spec.name, url)
    except StudyError as exc:
        if isinstance(exc.__cause__, KeyError):  # a journal file holding other studies only
            return "new"
        raise refuse(f"holds a study {spec.name!r} that cannot be read: {exc}",
                     "check the storage, or give the sweep another name") from exc
    found = [d.name.lower() for d in study.directions]
    wanted = [o.direction.value for o in spec.objectives]
    if found != wanted:
        raise SpecError(f"the existing study {spec.name!r} has directions {found}, the sweep "
                        f"file asks for {wanted}", file=str(spec.file), field="objective",
                        value=wanted, hint="resume with the same objectives, or give the "
                                           "sweep another name (a new study)")
    check_resume_compatible(spec, study)
    return f"resumes study {spec.name!r} ({len(study.get_trials(deepcopy=False))} trials)"


# -- code and data -------------------------------------------------------------------------
def _import_modules(spec: SweepSpec) -> None:
    from clonesweep.workers.runner import import_object

    for index, module in enumerate(spec.model.imports):
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise SpecError(f"cannot import it: {type(exc).__name__}: {exc}",
                            file=str(spec.file), field=f"model.imports[{index}]", value=module,
                            hint="every worker imports it before rebuilding; install the "
                                 "package or fix the name") from exc
    try:
        loader = import_object(spec.data.loader)
    except Exception as exc:
        raise SpecError(f"cannot import the data loader: {type(exc).__name__}: {exc}",
                        file=str(spec.file), field="data.loader", value=spec.data.loader,
                        hint="write it as module:function, importable on every worker")\
            from exc
    if not callable(loader):
        raise SpecError("the data loader is not callable", file=str(spec.file),
                        field="data.loader", value=spec.data.loader,
                        hint="it must be a function returning (x_train, y_train, x_val, y_val)")
