"""clonesweep's TPE sampler draws what Optuna's draws, for the same history and seed.

The sampler keeps the history across asks (study/tpe.py) instead of reading every trial on
each; these tests run the same sweep through it and through Optuna's own TPE (with the same
fast log-CDF, so the comparison is exact) and compare every trial's params with ``==``:
minimize and maximize, the constant liar with trials still running, pruned trials (with and
without intermediate values, NaN ones included), failed ones, infeasible ones, ties in the
values, conditional parameters, categorical, stepped and log parameters, the journal.
"""

from __future__ import annotations

import copy
import math
import pickle
import random
from pathlib import Path
from typing import Any

import optuna
import pytest

from clonesweep.orchestrator import _optuna
from clonesweep.orchestrator.study.journal import journal_storage
from clonesweep.orchestrator.study.plugins import TPESampler

S = optuna.trial.TrialState


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


class OptunasWithFastMath(optuna.samplers.TPESampler):
    """Optuna's TPE, its asks under the same log-CDF as ours (what clonesweep ran before)."""

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: Any) -> Any:
        with _optuna.fast_tpe_math():
            return super().sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: Any, name: str, dist: Any) -> Any:
        with _optuna.fast_tpe_math():
            return super().sample_independent(study, trial, name, dist)


def suggest(trial: optuna.Trial, conditional: bool) -> None:
    trial.suggest_int("units", 16, 256, log=True)
    trial.suggest_float("rate", 0.0, 0.5)
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.suggest_float("wd", 0.0, 0.01, step=0.001)
    act = trial.suggest_categorical("act", ["relu", "tanh", "gelu"])
    if conditional and act == "relu":
        trial.suggest_float("slope", 0.0, 0.3)


def sweep(sampler: optuna.samplers.BaseSampler, *, trials: int = 60, slots: int = 4,
          direction: str = "minimize", conditional: bool = False, ties: bool = False,
          pruned: float = 0.15, constraints: bool = False, storage: Any = None,
          seed: int = 0) -> list[dict[str, Any]]:
    """Every trial's params from a sweep that keeps ``slots`` trials running: asked,
    suggested, and told (complete, pruned, failed or infeasible) oldest first."""
    study = optuna.create_study(sampler=sampler, direction=direction, storage=storage)
    rng = random.Random(seed)
    running: list[optuna.Trial] = []
    asked: list[optuna.Trial] = []
    while len(asked) < trials or running:
        if len(asked) < trials and len(running) < slots:
            trial = study.ask()
            suggest(trial, conditional)
            running.append(trial)
            asked.append(trial)
            continue
        trial = running.pop(0)
        value = float(rng.randrange(3)) if ties else math.log(trial.params["units"]) * \
            trial.params["rate"] + rng.random()
        if constraints:
            trial.set_constraint("rate", trial.params["rate"] - 0.4)
        roll = rng.random()
        if roll < 0.1:
            study.tell(trial, state=S.FAIL)
        elif roll < 0.1 + pruned:
            for step in range(rng.randrange(3)):  # none, one or two steps
                trial.report(math.nan if roll < 0.13 else value + step % 2, step)
            study.tell(trial, state=S.PRUNED)
        else:
            study.tell(trial, value)
    return [t.params for t in asked]


CASES: dict[str, dict[str, Any]] = {
    "minimize, liar, 4 running": {},
    "maximize": {"direction": "maximize"},
    "ties in values": {"ties": True},
    "mostly pruned": {"pruned": 0.8, "ties": True},
    "conditional keys": {"conditional": True},
    "infeasible trials": {"constraints": True},
    "one at a time": {"slots": 1},
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("settings", [{}, {"constant_liar": False}, {"multivariate": False},
                                      {"multivariate": True, "group": True}],
                         ids=["liar", "no-liar", "independent", "group"])
def test_draws_equal_optunas(case: str, settings: dict[str, Any],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    if CASES[case].get("constraints") and not hasattr(optuna.trial.Trial, "set_constraint"):
        pytest.skip("Optuna < 5 has no Trial.set_constraint")
    theirs = sweep(OptunasWithFastMath(seed=7, n_startup_trials=8, **settings), **CASES[case])
    with monkeypatch.context() as patch:  # ours must not fall back on Optuna's draw
        patch.setattr(optuna.samplers.TPESampler, "_sample", _no_fallback)
        sampler = TPESampler(seed=7, n_startup_trials=8, **settings)
        ours = sweep(sampler, **CASES[case])
    assert ours == theirs
    assert sampler._history is not None and len(sampler._history) > 0


def _no_fallback(*args: Any) -> None:
    raise AssertionError("clonesweep's TPE took Optuna's own draw")


def test_draws_equal_optunas_on_the_journal(tmp_path: Path) -> None:
    ours = sweep(TPESampler(seed=1, n_startup_trials=8),
                 storage=journal_storage(tmp_path / "ours.log"))
    theirs = sweep(OptunasWithFastMath(seed=1, n_startup_trials=8),
                   storage=journal_storage(tmp_path / "theirs.log"))
    assert ours == theirs


def test_draws_equal_optunas_on_sqlite_beside_another_study(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a database the trial ids of two studies interleave; each study's list still holds
    trial ``i`` at position ``i`` (what the history relies on, and checks)."""
    def run(sampler: optuna.samplers.BaseSampler, url: str) -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=sampler, storage=url)
        other = optuna.create_study(storage=url)
        for i in range(24):
            other.enqueue_trial({"x": 0.5})
            other.tell(other.ask(), float(i))  # an id between each two of ``study``'s
            trial = study.ask()
            suggest(trial, False)
            study.tell(trial, math.log(trial.params["units"]) * trial.params["rate"])
        return [t.params for t in study.trials]

    theirs = run(OptunasWithFastMath(seed=2, n_startup_trials=5),
                 f"sqlite:///{tmp_path / 'theirs.db'}")
    with monkeypatch.context() as patch:  # ours must not fall back on Optuna's draw
        patch.setattr(optuna.samplers.TPESampler, "_sample", _no_fallback)
        ours = run(TPESampler(seed=2, n_startup_trials=5), f"sqlite:///{tmp_path / 'ours.db'}")
    assert ours == theirs


def test_multi_objective_takes_optunas_draw() -> None:
    def run(sampler: optuna.samplers.BaseSampler) -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=sampler, directions=["minimize", "maximize"])
        for i in range(30):
            trial = study.ask()
            suggest(trial, False)
            study.tell(trial, [trial.params["rate"], float(i % 7)])
        return [t.params for t in study.trials]

    assert run(TPESampler(seed=2, n_startup_trials=5)) == \
        run(OptunasWithFastMath(seed=2, n_startup_trials=5))


def test_same_seed_same_params() -> None:
    assert sweep(TPESampler(seed=11, n_startup_trials=5)) == \
        sweep(TPESampler(seed=11, n_startup_trials=5))


def test_history_reads_each_finished_trial_once() -> None:
    sampler = TPESampler(seed=0, n_startup_trials=3)
    study = optuna.create_study(sampler=sampler)
    calls = 0
    real = sampler._get_params

    def counted(trial: optuna.trial.FrozenTrial, study: optuna.Study) -> dict[str, Any]:
        nonlocal calls
        calls += trial.state.is_finished()
        return real(trial, study)

    sampler._get_params = counted  # type: ignore[method-assign]
    for i in range(40):
        trial = study.ask()
        suggest(trial, False)
        study.tell(trial, float(i))
    assert calls == 39  # the 39 trials told before the last ask, once each
    assert sampler._history is not None and len(sampler._history) == calls


def test_a_copy_draws_as_the_original() -> None:
    """A copied or pickled sampler starts its history afresh and draws the same."""
    sampler = TPESampler(seed=5, n_startup_trials=5)
    study = optuna.create_study(sampler=sampler)
    for i in range(20):
        trial = study.ask()
        suggest(trial, False)
        study.tell(trial, float(i % 5))
    twins = [copy.deepcopy(sampler), pickle.loads(pickle.dumps(sampler))]
    draws = []
    for twin in twins:
        assert twin._history is None or len(twin._history) == 0
        other = optuna.create_study(sampler=twin)
        other.add_trials(study.trials)
        draws.append(other.ask())
    draws.append(study.ask())
    for trial in draws:
        suggest(trial, False)
    assert draws[0].params == draws[1].params == draws[2].params


def test_a_new_study_starts_the_history_afresh() -> None:
    sampler = TPESampler(seed=3, n_startup_trials=3)
    for _ in range(2):
        study = optuna.create_study(sampler=sampler)
        for i in range(10):
            trial = study.ask()
            suggest(trial, False)
            study.tell(trial, float(i))
        assert sampler._history is not None and len(sampler._history) == 9


def test_optuna_4_takes_optunas_own_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    """The overrides mirror Optuna 5's TPE; on Optuna 4 the sampler runs Optuna's code."""
    monkeypatch.setattr(optuna, "__version__", "4.2.0")
    sampler = TPESampler(seed=4, n_startup_trials=5)
    assert sweep(sampler, trials=20) == sweep(OptunasWithFastMath(seed=4, n_startup_trials=5),
                                              trials=20)
    assert sampler._history is None


def test_enqueued_and_added_trials_mid_sweep_draw_as_optunas() -> None:
    """Trials that wait (enqueued, read again until they run) and finished trials added
    between asks (``add_trial``) reach the history as Optuna's own read sees them."""
    def run(sampler: optuna.samplers.BaseSampler) -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=sampler)
        rng = random.Random(3)
        running: list[optuna.Trial] = []
        for i in range(45):
            if i % 9 == 4:
                study.enqueue_trial({"units": 32, "rate": 0.1, "lr": 1e-3, "wd": 0.002,
                                     "act": "tanh"})
            if i % 11 == 6:
                study.add_trial(optuna.trial.create_trial(
                    params={"units": 64, "rate": 0.2, "lr": 1e-2, "wd": 0.0, "act": "relu"},
                    distributions={k: v for k, v in study.trials[0].distributions.items()},
                    value=rng.random()))
            trial = study.ask()
            suggest(trial, False)
            running.append(trial)
            if len(running) > 3:
                study.tell(running.pop(rng.randrange(len(running))), rng.random())
        return [t.params for t in study.trials]

    assert run(TPESampler(seed=4, n_startup_trials=5)) == \
        run(OptunasWithFastMath(seed=4, n_startup_trials=5))


class _Counted(list):  # type: ignore[type-arg]
    """A list that counts the positions read by index."""

    read: list[int] = []

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, int):
            _Counted.read.append(i)
        return super().__getitem__(i)


def test_an_ask_reads_only_the_trials_unfinished_or_new_since_the_last(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sampler = TPESampler(seed=0, n_startup_trials=5)
    study = optuna.create_study(sampler=sampler)
    running = []
    for i in range(300):
        trial = study.ask()
        suggest(trial, False)
        running.append(trial)
        if len(running) > 4:
            study.tell(running.pop(0), float(i % 17))
    real = optuna.Study._get_trials

    def counted(self: optuna.Study, *args: Any, **kwargs: Any) -> Any:
        trials = real(self, *args, **kwargs)
        return _Counted(trials) if kwargs.get("states") is None else trials

    monkeypatch.setattr(optuna.Study, "_get_trials", counted)
    _Counted.read = []
    suggest(study.ask(), False)
    # The one told since the last ask, the 4 still running and the new one, read by the
    # startup count and again by the draw; none of the 295 the history held already.
    assert set(_Counted.read) == {295, 296, 297, 298, 299, 300}
    assert sampler._history is not None and len(sampler._history) == 296
