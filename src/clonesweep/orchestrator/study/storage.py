"""The Optuna side: storage URLs, opening storages and studies, batched attribute writes.

Samplers, pruners and distributions are :mod:`clonesweep.orchestrator.study.plugins`. The
private Optuna internals that the batched writes use live in
:mod:`clonesweep.orchestrator._optuna`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from clonesweep.errors import SpecError, StudyError
from clonesweep.orchestrator import _optuna
from clonesweep.orchestrator.study.plugins import make_pruner, make_sampler
from clonesweep.spec.model import SweepSpec
from clonesweep.spec.settings import mask_url

__all__ = [
    "DEFAULT_STUDY_FILE",
    "OLD_STUDY_FILE",
    "commit",
    "dashboard_server",
    "dashboard_storage",
    "finish_trials",
    "load_study",
    "mask_url",
    "open_study",
    "quiet_optuna_logs",
    "storage_file",
    "storage_url",
    "study_exists_at",
]

def quiet_optuna_logs() -> None:
    """Keep Optuna's per-trial INFO lines off the terminal: the commands print their own
    table (or JSON), and only Optuna's warnings are worth showing beside it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


#: The run folder's default storage: a group-commit journal (Optuna's journal format).
DEFAULT_STUDY_FILE = "study.log"
#: The default storage before the journal: a run folder that holds one (and no journal)
#: keeps it, so a sweep started by an older clonesweep resumes where it was.
OLD_STUDY_FILE = "study.db"


def storage_url(spec: SweepSpec) -> str:
    """``sweep.storage``, or the run folder's journal file (``journal://.../study.log``).

    Why the journal is the default: every told trial is fsync'd before the driver counts
    it, as with SQLite, but with one fsync per trial instead of a transaction per write,
    the driver dispatches ~10x more trials per second (bench/dispatch.py), and
    optuna-dashboard and Optuna's own ``JournalFileBackend`` read the file. A run folder
    made before, holding ``study.db`` and no journal, keeps its SQLite file.
    """
    if spec.sweep.storage:
        return spec.sweep.storage
    folder = spec.run_folder
    if (folder / OLD_STUDY_FILE).exists() and not (folder / DEFAULT_STUDY_FILE).exists():
        return f"sqlite:///{(folder / OLD_STUDY_FILE).resolve()}"
    return f"journal://{(folder / DEFAULT_STUDY_FILE).resolve()}"


def storage_file(url: str) -> Path | None:
    """The file a ``sqlite:///`` or ``journal://`` URL names (None for a server or an
    in-memory SQLite database)."""
    for prefix in ("sqlite:///", "journal://"):
        if url.startswith(prefix):
            path = url[len(prefix):]
            return None if path in (":memory:", "") else Path(path)
    return None


def study_exists_at(url: str) -> bool:
    """False when ``url`` names a storage file that is not there (nothing is created to
    find out); True otherwise (a server is asked when the study is opened)."""
    path = storage_file(url)
    return path is None or path.exists()


def _storage(url: str) -> Any:
    if url.startswith("journal://"):
        # Optuna's journal format, written with one fsync per told trial (group commit).
        from clonesweep.orchestrator.study.journal import journal_storage

        return journal_storage(Path(url[len("journal://"):]))
    if url.startswith("sqlite:///"):
        return _rdb(url, engine_kwargs={"connect_args": {"timeout": 30}})
    return _rdb(url, heartbeat_interval=None)


def _rdb(url: str, attempts: int = 4, **kwargs: Any) -> optuna.storages.RDBStorage:
    """An RDBStorage, tolerant of another process creating the same database right now.

    Optuna creates the schema when it opens a new database; two processes doing that at once
    (a driver starting while ``clonesweep status`` or a dashboard opens the same new file)
    collide on the schema version row or a table. The loser waits and opens what the winner
    made.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (IntegrityError, OperationalError) as exc:
            racing = isinstance(exc, IntegrityError) or _optuna.schema_race(exc)
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def set_user_attrs(trial: optuna.trial.Trial, attrs: dict[str, Any]) -> None:
    """Set several user attributes of a running trial at once.

    On SQLite and PostgreSQL all of them go in one statement of one transaction (a told trial
    carries ~17: one commit and one upsert instead of a commit and a look-up per attribute),
    and a trial never holds half of them. On a journal they go in one append, then one
    replay, instead of one of each per attribute. Other storages (memory, another SQL
    database) take them one by one, as Optuna's own setter does; so does an Optuna whose
    internals differ from the ones used here.
    """
    if len(attrs) >= 2:
        sql = _optuna.sql_writer(trial.storage)
        if sql is not None:
            sql([(_optuna.trial_id(trial), attrs, None, None)])
            _optuna.cache_user_attrs(trial, attrs)
            return
        journal = _optuna.journal_user_attrs(trial.storage)
        if journal is not None:
            journal(_optuna.trial_id(trial), attrs)
            _optuna.cache_user_attrs(trial, attrs)
            return
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def finish_trials(study: optuna.Study,
                  told: list[tuple[optuna.trial.Trial, dict[str, Any],
                                   optuna.trial.TrialState, float | None]]) -> None:
    """Record running trials as finished: each one's user attributes, state and value.

    For trials whose sampler learns nothing from them (an ensemble's members): no
    ``study.tell`` (which re-reads the trial three times). On SQLite and PostgreSQL the whole
    batch is one transaction (~2.5 ms per trial on SQLite against ~15 for attributes, then a
    state write); elsewhere one trial at a time. Either way a trial is written whole or not.
    """
    storage = _optuna.storage_of(study)
    sql = _optuna.sql_writer(storage)
    if sql is not None:
        sql([(_optuna.trial_id(trial), attrs, state, value)
             for trial, attrs, state, value in told])
        return
    for trial, _, _, _ in told:  # refuse the whole batch before writing any of it
        storage.check_trial_is_updatable(_optuna.trial_id(trial),
                                         storage.get_trial(_optuna.trial_id(trial)).state)
    for trial, attrs, state, value in told:
        set_user_attrs(trial, attrs)
        storage.set_trial_state_values(_optuna.trial_id(trial), state,
                                       None if value is None else [value])


def commit(study: optuna.Study) -> None:
    """Write the operations a group-commit journal holds (see
    :mod:`clonesweep.orchestrator.study.journal`) to disk; nothing for other storages, which write
    each operation at once."""
    from clonesweep.orchestrator.study.journal import commit as commit_journal

    commit_journal(_optuna.storage_of(study))  # Optuna keeps the storage it was given here


def dashboard_storage(url: str) -> str:
    """``url`` as optuna-dashboard takes it: a journal file by its plain path (the dashboard
    then reads it with Optuna's own ``JournalFileBackend``)."""
    return url[len("journal://"):] if url.startswith("journal://") else url


def dashboard_server() -> Callable[[str, str, int], None]:
    """A function serving optuna-dashboard on a storage URL (``serve(url, host, port)``, until
    Ctrl-C), checked before the caller prints anything.

    Raises:
        SpecError: optuna-dashboard is not installed (the hint says how to install it).
    """
    try:
        import optuna_dashboard
    except ImportError as exc:
        raise SpecError("optuna-dashboard is not installed", field="dashboard",
                        hint="pip install 'clonesweep[dashboard]'") from exc

    def serve(url: str, host: str, port: int) -> None:
        optuna_dashboard.run_server(dashboard_storage(url), host=host, port=port)

    return serve


def open_study(spec: SweepSpec, url: str, sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the sweep's study, or load it if it exists (same name, same directions).

    A multi-objective sweep (``objective`` as a list) makes a study with one direction per
    objective, in order.
    """
    directions = [o.direction.value for o in spec.objectives]
    wanted = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize"
              else optuna.study.StudyDirection.MINIMIZE for d in directions]
    try:
        storage = _storage(url)
        study = optuna.create_study(study_name=spec.name, storage=storage,
                                    sampler=sampler or make_sampler(spec),
                                    pruner=pruner or make_pruner(spec),
                                    directions=wanted, load_if_exists=True)
    except SpecError:
        raise
    except Exception as exc:
        raise StudyError(f"cannot open the study {spec.name!r} at {mask_url(url)}: "
                         f"{mask_url(str(exc))}") from exc
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        what = "direction" if len(directions) == 1 else "directions"
        have = found[0] if len(found) == 1 else found
        want = directions[0] if len(directions) == 1 else directions
        raise StudyError(f"study {spec.name!r} at {mask_url(url)} exists with {what} "
                         f"{have}, the sweep file asks for {want}")
    _name_metrics(study, [o.metric for o in spec.objectives])  # ux
    return study


# --- ux: optuna-dashboard and Optuna's plots show each objective by its metric's name ---
def _name_metrics(study: optuna.Study, names: list[str]) -> None:
    """Name the study's objectives (else the dashboard shows "Objective 0"); written once:
    a study that already carries these names is not written to."""
    if study.metric_names == names:
        return
    with warnings.catch_warnings():
        # Experimental since Optuna 3.2, unchanged since.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)
# --- end ux ---


def load_study(name: str, url: str) -> optuna.Study:
    """Open an existing study for reading (``status``, ``best``); a storage file that is not
    there is not created."""
    if not study_exists_at(url):
        raise StudyError(f"no study named {name!r} at {mask_url(url)} (no such file); "
                         "run the sweep first")
    try:
        return optuna.load_study(study_name=name, storage=_storage(url))
    except KeyError as exc:
        raise StudyError(f"no study named {name!r} at {mask_url(url)}; run the sweep first")\
            from exc
    except Exception as exc:
        raise StudyError(f"cannot open {mask_url(url)}: {mask_url(str(exc))}") from exc
