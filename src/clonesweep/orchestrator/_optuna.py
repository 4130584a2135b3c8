"""Every use of Optuna's private internals, and every match of its error text, in one module.

Each function names the private thing it uses, the public way, and why that way is not
enough here. ``tests/unit/orchestrator/test__optuna.py`` exercises every one against the
installed Optuna, so a release that moves one fails there, by name, rather than deep inside a
sweep. Where the private path is an optimisation only (:func:`sql_writer`), a missing
internal makes the function return None and the caller takes Optuna's public path; the test
still fails, so the slowdown does not go unnoticed.

The import-boundary test (``tests/test_boundaries.py``) lets no other module import
``optuna.*._*`` or read a private attribute of an Optuna object.

About 370 lines: every private use of Optuna lives here by design, the TPE sampler's
overrides (~110 lines) included; the work they hand off is in ``study/tpe.py`` and
``study/parzen.py``, which use no Optuna internals.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.storages.journal import BaseJournalBackend, JournalStorage

# The journal's operation codes: the format of every line of a journal file (Optuna's own
# file backend, optuna-dashboard and our group-commit journal all read the same lines).
# Public way: none; the enum is not exported from ``optuna.storages.journal``.
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial

from clonesweep.orchestrator.study import parzen
from clonesweep.orchestrator.study.tpe import TPEScores, TrialHistory, Unsupported

__all__ = [
    "JournalOperation",
    "TPESampler",
    "cache_user_attrs",
    "create_running_trial",
    "fast_tpe_math",
    "journal_backend",
    "rdb_storage",
    "running_trial",
    "schema_race",
    "sql_writer",
    "stopped_outside_optimize",
    "storage_of",
    "trial_id",
]

Row = tuple[int, dict[str, Any], "optuna.trial.TrialState | None", "float | None"]


# -- a study's storage and its trials' ids ---------------------------------------------------
def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage object ``study`` writes through (``Study._storage``).

    Public way: open the storage again from its URL. Not enough: the driver's storage holds
    state of its own (a group-commit journal's unwritten lines, an RDB engine's pool), and a
    second object on a journal file would be a second writer.
    """
    storage: optuna.storages.BaseStorage = study._storage
    return storage


def trial_id(trial: optuna.trial.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a trial (``_trial_id``), which every storage call takes.

    Public way: ``storage.get_trial_id_from_study_id_trial_number(study_id, number)``. Not
    enough: it needs the study's id, private too, and costs a query per call.
    """
    value: int = trial._trial_id
    return value


def running_trial(study: optuna.Study,
                  trial: optuna.trial.Trial | optuna.trial.FrozenTrial) -> optuna.trial.Trial:
    """A live :class:`optuna.trial.Trial` for a RUNNING trial that this process did not ask
    for (one an earlier driver left), built as ``Trial(study, trial_id)``.

    Public way: ``study.tell(number, state=...)`` finishes a trial by number. Not enough: the
    fail reason and message must be set as user attributes first, and only a ``Trial`` sets
    them; Optuna documents its constructor as internal.
    """
    return optuna.trial.Trial(study, trial_id(trial))


def create_running_trial(study: optuna.Study,
                         template: optuna.trial.FrozenTrial) -> optuna.trial.Trial:
    """Create a RUNNING trial from ``template`` (params, distributions, user attributes) in
    one storage write and return it live (``storage.create_new_trial(study._study_id,
    template_trial=...)``).

    Public ways: ``study.ask(fixed_distributions)`` then one write per param and attribute
    (~28 ms of driver CPU per ensemble member on SQLite against ~10); ``study.add_trial``
    validates and writes a template too, but returns no id to build the live trial from.
    """
    new_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.trial.Trial(study, new_id)


def cache_user_attrs(trial: optuna.trial.Trial, attrs: dict[str, Any]) -> None:
    """Bring a live trial's cached copy (``_cached_frozen_trial``) in step after its user
    attributes were written behind its back (:func:`sql_writer`): ``trial.user_attrs``
    reads that cache.

    Public way: ``trial.set_user_attr`` per key, which writes each one separately.
    """
    trial._cached_frozen_trial.user_attrs.update(attrs)


# -- the storage behind Optuna's wrappers ----------------------------------------------------
def _wrapped(storage: Any) -> Any:
    # RDBStorage is wrapped in a cache whose ``_backend`` is the RDBStorage; a JournalStorage
    # keeps its log backend (file, Redis, ours) in ``_backend``. Public way: none.
    return getattr(storage, "_backend", None)


def rdb_storage(storage: Any) -> optuna.storages.RDBStorage | None:
    """The :class:`~optuna.storages.RDBStorage` behind ``storage`` (Optuna wraps the one it
    is given in a cache), or None for other storages."""
    for candidate in (storage, _wrapped(storage)):
        if isinstance(candidate, optuna.storages.RDBStorage):
            return candidate
    return None


def journal_backend(storage: Any) -> BaseJournalBackend | None:
    """The log backend a :class:`JournalStorage` writes to, or None for other storages."""
    backend = _wrapped(storage) if isinstance(storage, JournalStorage) else None
    return backend if isinstance(backend, BaseJournalBackend) else None


def journal_user_attrs(storage: Any) -> Callable[[int, dict[str, Any]], None] | None:
    """A function writing a running trial's user attributes to ``storage``'s journal in one
    append (one log line per attribute, Optuna's format) and one replay; None for other
    storages, or an Optuna whose internals differ from the ones used here.

    Private: ``JournalStorage._thread_lock``, ``_replay_result.worker_id`` (the line's
    writer) and ``_sync_with_backend``. Public way: ``trial.set_user_attr`` per attribute,
    each its own append and replay of the journal (a told trial carries ~20 attributes;
    ~0.3 ms less of the driver's CPU per trial measured, within that machine's noise:
    bench/README.md, "TPE at scale").
    """
    backend = journal_backend(storage)
    if backend is None:
        return None
    try:
        lock, sync = storage._thread_lock, storage._sync_with_backend
        storage._replay_result.worker_id  # noqa: B018 (present, or no fast path)
    except AttributeError:
        return None

    def write(trial_id: int, attrs: dict[str, Any]) -> None:
        with lock:
            worker = storage._replay_result.worker_id
            backend.append_logs([
                {"op_code": JournalOperation.SET_TRIAL_USER_ATTR, "worker_id": worker,
                 "trial_id": trial_id, "user_attr": {key: value}}
                for key, value in attrs.items()])
            sync()

    return write


def sql_writer(storage: Any) -> Callable[[list[Row]], None] | None:
    """A function writing (trial id, user attributes, final state or None, value) rows in one
    transaction of ``storage``'s SQLite or PostgreSQL database; None for other storages, or
    an Optuna whose internals differ from the ones used here.

    Private: ``optuna.storages._rdb.models`` (the tables), ``_create_scoped_session``, and
    ``RDBStorage._set_trial_value_without_commit``. Public way: ``trial.set_user_attr`` per
    attribute and ``storage.set_trial_state_values``, each its own transaction: a told trial
    carries ~17 attributes, so ~18 commits instead of one (~15 ms per trial on SQLite against
    ~2.5), and a crash between them leaves a trial with half its record.
    """
    backend = rdb_storage(storage)
    if backend is None:
        return None
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from sqlalchemy.dialects import postgresql, sqlite

        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(
            backend.engine.name)
        set_value = backend._set_trial_value_without_commit
    except (ImportError, AttributeError):
        return None
    if insert is None:
        return None
    table = models.TrialUserAttributeModel

    def write(rows: list[Row]) -> None:
        with _create_scoped_session(backend.scoped_session, True) as session:
            trials: dict[int, Any] = {}
            for trial_id_, _, _, _ in rows:  # refuse a finished trial, as Optuna's setters do
                trials[trial_id_] = models.TrialModel.find_or_raise_by_id(
                    trial_id_, session, for_update=True)
                backend.check_trial_is_updatable(trial_id_, trials[trial_id_].state)
            values = [{"trial_id": trial_id_, "key": key, "value_json": json.dumps(value)}
                      for trial_id_, attrs, _, _ in rows for key, value in attrs.items()]
            if values:
                stmt: Any = insert(table).values(values)
                session.execute(stmt.on_conflict_do_update(
                    index_elements=[table.trial_id, table.key],
                    set_={"value_json": stmt.excluded.value_json}))
            for trial_id_, _, state, value in rows:
                if state is None:
                    continue
                trial = trials[trial_id_]
                if value is not None:
                    set_value(session, trial, 0, value)
                trial.state = state
                trial.datetime_complete = datetime.datetime.now()

    return write


# -- Optuna's (and its database's) error text ------------------------------------------------
def schema_race(exc: BaseException) -> bool:
    """Whether opening an RDBStorage failed because another process was creating the same
    schema at that moment: SQLite says so only in the text of an ``OperationalError``
    ("table ... already exists"); PostgreSQL raises ``IntegrityError``, which the caller
    matches by type."""
    return "already exists" in str(exc)


def stopped_outside_optimize(exc: BaseException) -> bool:
    """Whether ``study.tell`` raised because a sampler called ``study.stop()`` (GridSampler,
    BruteForceSampler: every point visited), which works only inside ``study.optimize``. The
    trial is recorded by then. Optuna raises a plain RuntimeError; only its text
    ("`Study.stop` is supposed to be invoked inside an objective function ...") tells."""
    return isinstance(exc, RuntimeError) and "Study.stop" in str(exc)


def _log_ndtr_vectorized() -> Callable[[Any], Any] | None:
    try:
        import numpy as np
        from scipy.special import log_ndtr
    except ImportError:
        return None

    def vectorized(a: Any) -> Any:
        return log_ndtr(np.asarray(a, dtype=float))

    return vectorized


@contextlib.contextmanager
def fast_tpe_math() -> Iterator[None]:
    """For the block, TPE's log of the normal CDF runs over the whole array in C.

    Private: ``optuna.samplers._tpe._truncnorm._log_ndtr``, which applies a Python function
    to every element (``np.frompyfunc``): at 2,000 trials of history it was ~60% of an
    ask's CPU (bench/README.md, TPE at scale). It is replaced, for the block only, by
    ``scipy.special.log_ndtr`` (the same function, to ~1 ulp; scipy comes with
    scikit-learn). Public way: none (TPE's own math). Without scipy, or on an Optuna that
    moved the function, the block runs Optuna's own code unchanged.
    """
    fast = _log_ndtr_vectorized()
    try:
        from optuna.samplers._tpe import _truncnorm
    except ImportError:
        fast = None
    if fast is None or not callable(getattr(_truncnorm, "_log_ndtr", None)):
        yield
        return
    own = _truncnorm._log_ndtr
    _truncnorm._log_ndtr = fast  # type: ignore[assignment]
    try:
        yield
    finally:
        _truncnorm._log_ndtr = own


# -- TPE's asks: its history kept across asks, its candidates scored over arrays --------------
def _written_for_this_tpe() -> bool:
    """Whether the installed Optuna's TPE is the one :class:`TPESampler`'s overrides mirror:
    Optuna 5 (its ``_sample``, ``_split_trials`` and kernel classes; 5.0 and 5.1 are the same
    there). Optuna 4 splits, reads running trials and builds its kernels otherwise, so there
    the sampler runs Optuna's own code (with the fast log-CDF only)."""
    return int(optuna.__version__.split(".")[0]) >= 5


def _mixture(estimator: Any) -> tuple[Any, list[parzen.Kernels]] | None:
    """A Parzen estimator's weights and kernels (``_mixture_distribution`` and its
    ``_Batched*Distributions``), or None for an estimator class of the user's, a kernel kind
    :mod:`~clonesweep.orchestrator.study.parzen` does not know, or Optuna 4."""
    if not _written_for_this_tpe():
        return None
    from optuna.samplers._tpe import probability_distributions as dists
    from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator

    if type(estimator) is not _ParzenEstimator:
        return None
    numerical = (dists._BatchedTruncNormDistributions, dists._BatchedTruncLogNormDistributions,
                 dists._BatchedDiscreteTruncNormDistributions,
                 dists._BatchedDiscreteTruncLogNormDistributions)
    mixture = estimator._mixture_distribution
    kernels = []
    for d in mixture.distributions:
        if isinstance(d, dists._BatchedCategoricalDistributions):
            kernels.append(parzen.Kernels(choices=d.weights))
        elif isinstance(d, numerical):
            kernels.append(parzen.Kernels(mu=d.mu, sigma=d.sigma, low=d.adapted_low,
                                          high=d.adapted_high, step=d.step, log=d.is_log))
        else:
            return None
    return mixture.weights, kernels


def _tpe_scores(sampler: optuna.samplers.TPESampler) -> TPEScores:
    """How Optuna's TPE reads a trial: its split's scores and ``TPESampler._get_params``."""
    from optuna.samplers._tpe import sampler as tpe

    return TPEScores(tpe._get_infeasible_trial_score, tpe._get_pruned_trial_score,
                     sampler._get_params)


class TPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE sampler, cheaper per ask: the same draws for the same history and seed.

    Three private changes, each leaving Optuna's own code to run where it does not apply:

    * its asks run under :func:`fast_tpe_math` (the normal log-CDF over whole arrays);
    * its draw (``_sample``) and its count of finished trials against the startup trials
      (``_sample_relative``) read the study's history through a
      :class:`~clonesweep.orchestrator.study.tpe.TrialHistory` kept across asks instead of
      sorting and converting every trial again on each ask: an ask reads only the trials
      unfinished at the last ask or new since, from the study's list as this ask read it
      (Optuna's cached read; under the constant liar Optuna reads it once more, uncached:
      the same trials unless another thread tells one in between). Optuna's split scores,
      Parzen estimators, candidates and random stream, given the same arrays in the same
      order, so the draws are Optuna's (``==`` in
      ``tests/unit/orchestrator/study/test_tpe.py``). A multi-objective study, a history it
      cannot split as Optuna does (:class:`~clonesweep.orchestrator.study.tpe.Unsupported`)
      and Optuna 4 take Optuna's ``_sample_relative`` and ``_sample``;
    * its candidates are scored (``_compute_acquisition_func``) by
      :func:`clonesweep.orchestrator.study.parzen.log_pdf`: Optuna's mixtures' log-density,
      equal to 1e-12 relative (``test_parzen.py``), from the kernels :func:`_mixture` reads.

    Private: overrides ``TPESampler._sample_relative``, ``_sample`` and
    ``_compute_acquisition_func``, and reads what they read: ``study._get_trials``,
    ``study._is_multi_objective``, the sampler's ``_n_startup_trials``, ``_constant_liar``,
    ``_gamma``,
    ``_rng``, ``_n_ei_candidates``, ``_parzen_estimator_cls``,
    ``_parzen_estimator_parameters``, ``_compare``, ``_get_params``, the estimators'
    ``_transform`` and kernels, and ``optuna.samplers._tpe.sampler``'s ``default_gamma``,
    ``_get_infeasible_trial_score`` and ``_get_pruned_trial_score``. Public way: none
    (TPE's own internals). At 2,000 trials of history these cut an ask's CPU ~2.4x against
    the fast log-CDF alone (bench/README.md, "TPE at scale"); ``test__optuna.py`` fails if
    an override stops being called.
    """

    _history: TrialHistory | None = None  # made at the first draw (no __init__ of our own:
    # the settings are checked against Optuna's signature)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        with fast_tpe_math():
            return super().sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial,
                           param_name: str, param_distribution: Any) -> Any:
        with fast_tpe_math():
            return super().sample_independent(study, trial, param_name, param_distribution)

    def _ours(self, study: optuna.Study) -> TrialHistory | None:
        """The history, where this ask takes clonesweep's path (single objective, Optuna 5)."""
        if study._is_multi_objective() or not _written_for_this_tpe():
            return None
        if self._history is None:
            self._history = TrialHistory()
        return self._history

    def _sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                         search_space: dict[str, Any]) -> dict[str, Any]:
        # Optuna's, counting the finished trials from the history instead of a pass over
        # every trial of the study.
        history = self._ours(study)
        if search_space == {} or history is None:
            return super()._sample_relative(study, trial, search_space)
        try:
            finished = history.finished(study, study._get_trials(deepcopy=False, use_cache=True),
                                        _tpe_scores(self))
        except Unsupported:
            return super()._sample_relative(study, trial, search_space)
        if finished < self._n_startup_trials:
            return {}
        return self._sample(study, trial, search_space)

    def _sample(self, study: optuna.Study, trial: FrozenTrial,
                search_space: dict[str, Any]) -> dict[str, Any]:
        history = self._ours(study)
        if history is None:
            return super()._sample(study, trial, search_space)
        from optuna.samplers._tpe.sampler import default_gamma

        # The study's whole list, as read once for this ask (Optuna's own read under the
        # constant liar is another, uncached: the same trials in one thread).
        trials = study._get_trials(deepcopy=False, use_cache=True)
        if self._gamma is None:
            self._gamma = default_gamma
        try:  # the asking trial left out, gamma of the finished ones below: as Optuna's
            below, above = history.observations(
                study, trials, trial.number, self._gamma, search_space,
                study.direction == optuna.study.StudyDirection.MAXIMIZE, _tpe_scores(self),
                liar=self._constant_liar)
        except Unsupported:
            return super()._sample(study, trial, search_space)
        mpe_below = self._parzen_estimator_cls(below, search_space,
                                               self._parzen_estimator_parameters)
        mpe_above = self._parzen_estimator_cls(above, search_space,
                                               self._parzen_estimator_parameters)
        samples = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        best = self._compare(samples, self._compute_acquisition_func(samples, mpe_below,
                                                                     mpe_above))
        return {name: dist.to_external_repr(best[name]) for name, dist in search_space.items()}

    def _compute_acquisition_func(self, samples: dict[str, Any], mpe_below: Any,
                                  mpe_above: Any) -> Any:
        below, above = _mixture(mpe_below), _mixture(mpe_above)
        if below is None or above is None:
            return super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        x = mpe_below._transform(samples)
        return parzen.log_pdf(x, *below) - parzen.log_pdf(x, *above)
