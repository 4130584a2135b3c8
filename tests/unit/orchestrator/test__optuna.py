"""Each private Optuna use in clonesweep.orchestrator._optuna, against the installed Optuna.

A release that moves one of them fails here, naming it, instead of deep in a sweep (or, for
the batched SQL writer, silently falling back to the slow path).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import sqlalchemy

from clonesweep.orchestrator import _optuna
from clonesweep.orchestrator.study.journal import commit, journal_storage

S = optuna.trial.TrialState


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(params=["sqlite", "journal", "memory"])
def study(request: pytest.FixtureRequest, tmp_path: Path) -> optuna.Study:
    storage = {"sqlite": lambda: f"sqlite:///{tmp_path / 'study.db'}",
               "journal": lambda: journal_storage(tmp_path / "study.log"),
               "memory": lambda: None}[request.param]()
    return optuna.create_study(study_name="s", storage=storage)


def test_storage_of_is_the_study_s_own_storage(study: optuna.Study) -> None:
    storage = _optuna.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    trial = study.ask()
    assert storage.get_trial(_optuna.trial_id(trial)).number == trial.number


def test_trial_id_is_the_same_on_live_and_frozen_trials(study: optuna.Study) -> None:
    live = [study.ask() for _ in range(3)]
    frozen = study.get_trials(deepcopy=False)
    assert [_optuna.trial_id(t) for t in live] == [_optuna.trial_id(t) for t in frozen]


def test_running_trial_finishes_a_trial_another_driver_asked(study: optuna.Study) -> None:
    study.ask()
    (left,) = study.get_trials(deepcopy=False, states=(S.RUNNING,))
    live = _optuna.running_trial(study, left)
    assert isinstance(live, optuna.trial.Trial) and live.number == left.number
    live.set_user_attr("fail_reason", "driver_died")
    study.tell(live, state=S.FAIL)
    (done,) = study.get_trials(deepcopy=False)
    assert done.state is S.FAIL and done.user_attrs["fail_reason"] == "driver_died"


def test_create_running_trial_writes_a_template_whole(study: optuna.Study) -> None:
    dist = optuna.distributions.CategoricalDistribution([8])
    template = optuna.trial.FrozenTrial(
        number=-1, state=S.RUNNING, value=None, datetime_start=datetime.datetime.now(),
        datetime_complete=None, params={"units": 8}, distributions={"units": dist},
        system_attrs={}, intermediate_values={}, user_attrs={"member_index": 0}, trial_id=-1)
    live = _optuna.create_running_trial(study, template)
    assert isinstance(live, optuna.trial.Trial)
    assert live.params == {"units": 8} and live.user_attrs == {"member_index": 0}
    study.tell(live, 0.5)
    (done,) = study.get_trials(deepcopy=False)
    assert done.state is S.COMPLETE and done.params == {"units": 8} and done.value == 0.5


def test_cache_user_attrs_is_what_the_live_trial_reads(study: optuna.Study) -> None:
    trial = study.ask()
    _optuna.cache_user_attrs(trial, {"a": 1})
    assert trial.user_attrs["a"] == 1


def test_rdb_and_journal_backends_are_found_behind_optuna_s_wrappers(tmp_path: Path) -> None:
    on_sqlite = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}")
    on_journal = optuna.create_study(storage=journal_storage(tmp_path / "a.log"))
    in_memory = optuna.create_study()
    rdb = _optuna.rdb_storage(_optuna.storage_of(on_sqlite))
    assert isinstance(rdb, optuna.storages.RDBStorage)
    assert _optuna.journal_backend(_optuna.storage_of(on_sqlite)) is None
    backend = _optuna.journal_backend(_optuna.storage_of(on_journal))
    assert isinstance(backend, optuna.storages.journal.BaseJournalBackend)
    assert _optuna.rdb_storage(_optuna.storage_of(on_journal)) is None
    assert _optuna.rdb_storage(_optuna.storage_of(in_memory)) is None


def test_journal_operation_codes_are_optuna_s_file_format(tmp_path: Path) -> None:
    """The group-commit journal decides what to fsync from these codes: check them on lines
    written by Optuna's own file backend."""
    import json

    path = tmp_path / "optuna.log"
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    study = optuna.create_study(storage=optuna.storages.JournalStorage(backend))
    study.set_user_attr("lease", "x")
    study.enqueue_trial({"x": 1.0})
    trial = study.ask()
    trial.suggest_float("x", 0.0, 2.0)
    study.tell(trial, 1.0)
    ops = [json.loads(line)["op_code"] for line in path.read_text().splitlines()]
    J = _optuna.JournalOperation
    assert ops[0] == J.CREATE_STUDY
    assert J.SET_STUDY_USER_ATTR in ops and J.CREATE_TRIAL in ops
    assert J.SET_TRIAL_STATE_VALUES in ops and J.SET_TRIAL_PARAM in ops
    assert {J.DELETE_STUDY, J.SET_STUDY_SYSTEM_ATTR} <= set(J)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_sql_writer_writes_attributes_state_and_value_in_one_go(
        engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'w.db'}" if engine == "sqlite"
           else request.getfixturevalue("postgres_url"))
    study = optuna.create_study(study_name=f"w-{tmp_path.name}", storage=url)
    write = _optuna.sql_writer(_optuna.storage_of(study))
    assert write is not None, "Optuna's RDB internals moved: batched writes are off"
    a, b = study.ask(), study.ask()
    write([(_optuna.trial_id(a), {"k": 1, "m": "x"}, None, None),
           (_optuna.trial_id(b), {"k": 2}, S.COMPLETE, 0.25)])
    first, second = study.get_trials(deepcopy=False)
    assert first.state is S.RUNNING and first.user_attrs == {"k": 1, "m": "x"}
    assert second.state is S.COMPLETE and second.value == 0.25 and second.user_attrs == {"k": 2}
    assert second.datetime_complete is not None
    with pytest.raises(RuntimeError):  # a finished trial is refused, as Optuna's setters do
        write([(_optuna.trial_id(b), {"k": 3}, None, None)])


def test_sql_writer_is_none_off_rdb(tmp_path: Path) -> None:
    study = optuna.create_study(storage=journal_storage(tmp_path / "j.log"))
    assert _optuna.sql_writer(_optuna.storage_of(study)) is None
    assert _optuna.sql_writer(_optuna.storage_of(optuna.create_study())) is None


@pytest.mark.parametrize("backend", ["group-commit", "optuna-file"])
def test_journal_user_attrs_writes_optuna_s_lines_in_one_append(backend: str,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    storage = (journal_storage(path) if backend == "group-commit" else
               optuna.storages.JournalStorage(
                   optuna.storages.journal.JournalFileBackend(str(path))))
    study = optuna.create_study(storage=storage)
    write = _optuna.journal_user_attrs(_optuna.storage_of(study))
    assert write is not None, "Optuna's JournalStorage internals moved: batched writes are off"
    trial = study.ask()
    appended = []
    real = _optuna.journal_backend(storage).append_logs  # type: ignore[union-attr]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_optuna.journal_backend(storage), "append_logs",
                      lambda logs: (appended.append(len(logs)), real(logs))[1])
        write(_optuna.trial_id(trial), {"k": 1, "m": "x", "n": [1, 2]})
    assert appended == [3]
    assert study.get_trials(deepcopy=False)[0].user_attrs == {"k": 1, "m": "x", "n": [1, 2]}
    study.tell(trial, 1.0)
    commit(storage)
    reader = optuna.load_study(study_name=study.study_name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(path))))
    assert reader.trials[0].user_attrs == {"k": 1, "m": "x", "n": [1, 2]}
    with pytest.raises(RuntimeError):  # a finished trial is refused, as Optuna's setter does
        write(_optuna.trial_id(trial), {"k": 3, "m": "y"})


def test_journal_user_attrs_is_none_off_the_journal(tmp_path: Path) -> None:
    assert _optuna.journal_user_attrs(_optuna.storage_of(optuna.create_study())) is None
    sqlite = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    assert _optuna.journal_user_attrs(_optuna.storage_of(sqlite)) is None


def test_schema_race_reads_sqlite_s_text(tmp_path: Path) -> None:
    """Two processes creating Optuna's schema at once: SQLite's loser gets this text."""
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE studies (id INTEGER)"))
    with pytest.raises(sqlalchemy.exc.OperationalError) as caught, engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE studies (id INTEGER)"))
    assert _optuna.schema_race(caught.value)
    assert not _optuna.schema_race(RuntimeError("database is locked"))


def test_a_grid_sampler_s_stop_is_recognised() -> None:
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [0]}))
    trial = study.ask()
    trial.suggest_categorical("x", [0])
    with pytest.raises(RuntimeError) as caught:
        study.tell(trial, 1.0)
    assert _optuna.stopped_outside_optimize(caught.value)
    assert study.get_trials(deepcopy=False)[0].state is S.COMPLETE  # recorded already
    assert not _optuna.stopped_outside_optimize(RuntimeError("other"))


def test_fast_tpe_math_replaces_the_log_cdf_for_the_block_only() -> None:
    import numpy as np
    from optuna.samplers._tpe import _truncnorm

    own = _truncnorm._log_ndtr
    grid = np.concatenate([np.linspace(-60.0, 60.0, 2001), [-1e3, -25.0, 0.0, 7.5, 40.0]])
    with _optuna.fast_tpe_math():
        fast = _truncnorm._log_ndtr
        assert fast is not own, "fast_tpe_math did not take: _truncnorm._log_ndtr moved?"
        got = fast(grid)
    assert _truncnorm._log_ndtr is own
    left = grid <= 0  # where TPE calls it (its truncated-normal masses use the left tail)
    np.testing.assert_allclose(got[left], own(grid[left]), rtol=1e-12)
    # Right of 0 Optuna's log(1 - tiny) loses digits that scipy keeps: equal to 1e-15.
    right = ~left
    np.testing.assert_allclose(got[right], own(grid[right]), rtol=0, atol=1e-15)


def test_tpe_with_fast_math_samples_as_optunas_within_rounding() -> None:
    from clonesweep.orchestrator.study.plugins import TPESampler

    dists = {"u": optuna.distributions.IntDistribution(16, 256, log=True),
             "r": optuna.distributions.FloatDistribution(0.0, 0.5),
             "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}

    def draws(sampler: optuna.samplers.BaseSampler) -> list[dict[str, float]]:
        study = optuna.create_study(sampler=sampler)
        out = []
        for i in range(40):
            trial = study.ask(dists)
            study.tell(trial, float((i * 7919) % 97))
            out.append(trial.params)
        return out

    ours = draws(TPESampler(seed=3, n_startup_trials=5, constant_liar=True))
    theirs = draws(optuna.samplers.TPESampler(seed=3, n_startup_trials=5, constant_liar=True))
    for a, b in zip(ours, theirs, strict=True):
        assert a["u"] == b["u"]
        assert a["r"] == pytest.approx(b["r"], rel=1e-9)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)


def test_tpe_draws_through_its_history_and_array_log_pdf(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """TPESampler overrides TPESampler._sample_relative, _sample and
    _compute_acquisition_func: a release that renames one leaves Optuna's slower code
    running, and fails here."""
    from clonesweep.orchestrator.study import parzen, tpe
    from clonesweep.orchestrator.study.plugins import TPESampler

    scored = []
    real = parzen.log_pdf

    def counted(*args: Any) -> Any:
        scored.append(args)
        return real(*args)

    counts = []
    real_finished = tpe.TrialHistory.finished

    def finished(*args: Any) -> int:
        counts.append(real_finished(*args))
        return counts[-1]

    monkeypatch.setattr(parzen, "log_pdf", counted)
    monkeypatch.setattr(tpe.TrialHistory, "finished", finished)
    sampler = TPESampler(seed=0, n_startup_trials=3)
    study = optuna.create_study(sampler=sampler)
    for i in range(6):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, float(i))
    assert sampler._history is not None and len(sampler._history) == 5
    assert len(scored) == 2 * 3  # below and above, for each of the 3 TPE asks
    # The startup count, from the history, at each ask with a search space (not the first).
    assert counts == [1, 2, 3, 4, 5]


def test_mixture_reads_every_kind_of_parzen_kernel() -> None:
    from optuna.samplers._tpe.parzen_estimator import (
        _ParzenEstimator,
        _ParzenEstimatorParameters,
    )
    from optuna.samplers._tpe.sampler import default_weights

    D = optuna.distributions
    space = {"f": D.FloatDistribution(0.0, 1.0), "lf": D.FloatDistribution(1e-3, 1.0, log=True),
             "i": D.IntDistribution(0, 10), "li": D.IntDistribution(1, 100, log=True),
             "c": D.CategoricalDistribution(["a", "b"])}
    observed = {"f": [0.5], "lf": [0.1], "i": [3.0], "li": [7.0], "c": [1.0]}
    estimator = _ParzenEstimator({k: np.asarray(v) for k, v in observed.items()}, space,
                                 _ParzenEstimatorParameters(1.0, True, False, default_weights,
                                                            True))
    mixture = _optuna._mixture(estimator)
    assert mixture is not None, "an Optuna kernel class moved or was renamed"
    weights, kernels = mixture
    assert len(weights) == 2 and [k.step for k in kernels[:4]] == [0.0, 0.0, 1.0, 1.0]
    assert [k.log for k in kernels[:4]] == [False, True, False, True]
    assert kernels[4].choices is not None and kernels[4].choices.shape == (2, 2)
