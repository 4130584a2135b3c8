"""TPE's view of a study's history, kept across asks instead of rebuilt on each.

Optuna's TPE sampler, on every ask, walks every trial of the study in Python: it sorts the
finished ones into the best ("below") and the rest ("above", with the running ones under the
constant liar), reading each one's constraints, value or last intermediate value, then reads
every trial's params into arrays, one ``to_internal_repr`` per trial and parameter. At 2,000
trials that was ~2/3 of an ask's CPU, and it grows with the history (bench/README.md, "TPE
at scale"). A finished trial (COMPLETE, PRUNED or FAIL) never changes, so
:class:`TrialHistory` reads each one once, into arrays; an ask looks only at the trials
unfinished at the last ask and those created since (the study's list holds trial ``i`` at
position ``i``), and splits with array sorts.

What it hands TPE is what Optuna's own code builds, array for array and in the same order:
the same split (a stable sort by value, then pruned trials by their last step and value,
then infeasible ones by their violation; each side ordered by trial number), the same
trials left out for lacking a parameter. The sort keys come from Optuna's own functions,
passed in by :mod:`clonesweep.orchestrator._optuna`, which also runs the rest of the draw;
this module reads only public trial fields. Single objective only: a multi-objective split
ranks by non-domination, and the sampler leaves it to Optuna.

Thread-safe: one lock around each ask's read (Optuna's ``study.optimize(n_jobs=...)`` asks
from several threads). A pickled or copied history starts empty.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

__all__ = ["Observations", "TPEScores", "TrialHistory", "Unsupported"]

#: Observations for one Parzen estimator: internal values by parameter name.
Observations = dict[str, np.ndarray]

_COMPLETE, _PRUNED, _INFEASIBLE = 0, 1, 2


class Unsupported(ValueError):
    """The history cannot reproduce Optuna's split here (a NaN sort key, a trial state TPE
    does not read, a value outside its distribution): the caller takes Optuna's own path."""


@dataclass(frozen=True)
class TPEScores:
    """How TPE reads a trial, given by the sampler (Optuna's own functions).

    Attributes:
        infeasible: A finished trial's constraint violation (> 0: infeasible).
        pruned: A pruned trial's sort key (lower goes below first).
        params: A trial's params as TPE reads them, given the trial and its study (a running
            trial's include the relative params its ask drew).
    """

    infeasible: Callable[[FrozenTrial], float]
    pruned: Callable[[FrozenTrial, Any], tuple[float, float]]
    params: Callable[[FrozenTrial, Any], dict[str, Any]]


class _Column:
    """One parameter's internal values over the history's rows (NaN where absent)."""

    def __init__(self) -> None:
        self.values = np.empty(0)
        self.present = np.empty(0, dtype=bool)


class TrialHistory:
    """The finished trials of one study, as TPE splits and reads them, added once each.

    Example:
        >>> history = TrialHistory()
        >>> below, above = history.observations(  # doctest: +SKIP
        ...     study, trials, n_below, search_space, maximize, scores)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, study: Any) -> None:
        self._study: weakref.ref[Any] | None = weakref.ref(study) if study is not None else None
        self._params: list[dict[str, Any]] = []  # each row's params
        # Each row's trial number, kind and sort key (two columns) as arrays, and the rows
        # added since they were last extended.
        self._number = np.empty(0, dtype=np.int64)
        self._kind = np.empty(0, dtype=np.int8)
        self._key = np.empty((0, 2))
        self._new: list[tuple[int, int, float, float]] = []
        self._columns: dict[tuple[str, BaseDistribution], _Column] = {}
        # The study's list as far as it was read: its length, the positions then unfinished
        # (RUNNING or WAITING: read again at each ask), and every row ordered by trial number.
        self._seen = 0
        self._pending: list[int] = []
        self._in_order = np.empty(0, dtype=np.intp)
        self._live: dict[int, tuple[FrozenTrial, dict[str, Any]]] = {}  # running: params

    def __len__(self) -> int:
        return len(self._params)

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a copy starts empty (a lock and a weak reference do not pickle)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    # -- one ask -----------------------------------------------------------------------------
    def finished(self, study: Any, trials: Sequence[FrozenTrial], scores: TPEScores) -> int:
        """How many of ``trials`` are COMPLETE or PRUNED (what TPE counts against its
        startup trials), reading those finished since the last ask.

        Args:
            study: The study ``trials`` come from (a new study starts the history afresh).
            trials: Every trial of the study, in its order (``study._get_trials()`` with no
                state filter: trial ``i`` at position ``i``).
            scores: How the sampler reads a trial.

        Raises:
            Unsupported: See :class:`Unsupported` (also: ``trials`` is not the study's whole
                list in its order).
        """
        with self._lock:
            self._update(study, trials, scores)
            return len(self._params)

    def observations(self, study: Any, trials: Sequence[FrozenTrial], asking: int,
                     gamma: Callable[[int], int], search_space: dict[str, BaseDistribution],
                     maximize: bool, scores: TPEScores,
                     liar: bool) -> tuple[Observations, Observations]:
        """The below and above observations TPE builds its two estimators from.

        Args:
            study: The study ``trials`` come from (a new study starts the history afresh).
            trials: Every trial of the study, in its order (as for :meth:`finished`).
            asking: The number of the trial asking, left out.
            gamma: How many finished trials go below, given how many there are.
            search_space: The parameters sampled; a trial lacking one is left out.
            maximize: The study's direction.
            scores: How the sampler reads a trial.
            liar: Whether the running trials (the asking one aside) count above (Optuna's
                constant liar).

        Raises:
            Unsupported: Optuna's own path must be taken (see :meth:`finished`).
        """
        with self._lock:
            self._update(study, trials, scores)
            rows = self._in_order
            running = []
            for trial in (trials[i] for i in self._pending if liar):
                if trial.number != asking and trial.state == TrialState.RUNNING:
                    running.append((trial.number, self._running_params(trial, study, scores)))
            below = self._below(rows, gamma(len(rows)), maximize)
            columns = [(name, self._column(name, dist)) for name, dist in search_space.items()]
            return (self._read(rows[below], [], columns, search_space),
                    self._read(rows[~below], running, columns, search_space))

    def _running_params(self, trial: FrozenTrial, study: Any,
                        scores: TPEScores) -> dict[str, Any]:
        """A running trial's params as TPE reads them (under the constant liar: the relative
        params its ask drew, a JSON system attribute), read again only when the storage
        handed a new trial object (a journal or memory storage replaces a trial's object
        when anything of it changes; a database storage reads new objects on every ask)."""
        held = self._live.get(trial.number)
        if held is None or held[0] is not trial:
            held = self._live[trial.number] = (trial, scores.params(trial, study))
        return held[1]

    def _update(self, study: Any, trials: Sequence[FrozenTrial], scores: TPEScores) -> None:
        """Add the trials finished since the last ask: among those then unfinished and those
        created since; the rest are rows already (or failed, which TPE does not read)."""
        if self._study is None or self._study() is not study or len(trials) < self._seen:
            self._reset(study)
        added = False
        pending: list[int] = []
        try:
            for i in [*self._pending, *range(self._seen, len(trials))]:
                trial = trials[i]
                if trial.number != i:
                    raise Unsupported(f"position {i} holds trial {trial.number}")
                state = trial.state
                if state == TrialState.RUNNING or state == TrialState.WAITING:
                    pending.append(i)
                elif state != TrialState.FAIL:
                    self._add(study, trial, scores)
                    added = True
        except Unsupported:
            self._reset(None)  # the next ask reads the whole list again
            raise
        self._pending, self._seen = pending, len(trials)
        if len(self._live) > len(pending):  # forget the params of trials no longer running
            keep = {trials[i].number for i in pending}
            self._live = {n: held for n, held in self._live.items() if n in keep}
        if added:
            self._extend()
            self._in_order = np.argsort(self._number, kind="stable")

    def _add(self, study: Any, trial: FrozenTrial, scores: TPEScores) -> None:
        score = scores.infeasible(trial)
        if score > 0:
            kind, key = _INFEASIBLE, (float(score), 0.0)
        elif trial.state == TrialState.COMPLETE:
            kind, key = _COMPLETE, (float(trial.value), 0.0)  # type: ignore[arg-type]
        elif trial.state == TrialState.PRUNED:
            step, value = scores.pruned(trial, study)
            kind, key = _PRUNED, (float(step), float(value))
        else:
            raise Unsupported(f"trial {trial.number} is {trial.state.name}")
        if any(np.isnan(k) for k in key):
            raise Unsupported(f"trial {trial.number} sorts on NaN")
        self._new.append((trial.number, kind, *key))
        self._params.append(scores.params(trial, study))

    def _below(self, rows: np.ndarray, n_below: int, maximize: bool) -> np.ndarray:
        """A mask over ``rows``: the ones that go below, as Optuna's ``_split_trials`` picks
        them (its sorts are stable over the study's order, which ``rows`` keeps)."""
        kind, key, tie = self._kind[rows], self._key[rows, 0], self._key[rows, 1]
        below = np.zeros(len(rows), dtype=bool)
        for which in (_COMPLETE, _PRUNED, _INFEASIBLE):
            at = np.flatnonzero(kind == which)
            take = min(max(0, n_below), len(at))
            if take:
                first = -key[at] if which == _COMPLETE and maximize else key[at]
                if take < len(at):  # sort only those that can be among the first `take`
                    near = np.flatnonzero(first <= np.partition(first, take - 1)[take - 1])
                    at, first = at[near], first[near]
                order = np.lexsort((tie[at], first))  # stable: ties keep the study's order
                below[at[order[:take]]] = True
            n_below -= take
        return below

    def _extend(self) -> None:
        """The arrays extended by the rows added since (one copy per ask, not per row)."""
        if self._new:
            number, kind, key, tie = zip(*self._new, strict=True)
            self._number = np.concatenate([self._number, np.asarray(number, dtype=np.int64)])
            self._kind = np.concatenate([self._kind, np.asarray(kind, dtype=np.int8)])
            self._key = np.concatenate([self._key, np.column_stack([key, tie])])
            self._new = []

    def _column(self, name: str, dist: BaseDistribution) -> _Column:
        column = self._columns.setdefault((name, dist), _Column())
        done = len(column.values)
        if done < len(self._params):
            new = self._params[done:]
            present = np.fromiter((name in p for p in new), dtype=bool, count=len(new))
            values = np.full(len(new), np.nan)
            for i, params in enumerate(new):
                if present[i]:
                    values[i] = _internal(dist, params[name])
            column.values = np.concatenate([column.values, values])
            column.present = np.concatenate([column.present, present])
        return column

    def _read(self, rows: np.ndarray, running: list[tuple[int, dict[str, Any]]],
              columns: list[tuple[str, _Column]],
              search_space: dict[str, BaseDistribution]) -> Observations:
        """Internal values of ``rows`` and ``running`` holding every parameter, in the
        order of their trial numbers (Optuna's ``_get_internal_repr`` of a sorted list)."""
        keep = np.ones(len(rows), dtype=bool)
        for _, column in columns:
            keep &= column.present[rows]
        rows = rows[keep]
        numbers = self._number[rows]
        live = [(n, p) for n, p in running if search_space.keys() <= p.keys()]
        order = np.argsort(np.concatenate([numbers, [n for n, _ in live]]), kind="stable")
        out: Observations = {}
        for name, column in columns:
            extra = [_internal(search_space[name], p[name]) for _, p in live]
            out[name] = np.concatenate([column.values[rows], extra])[order]
        return out


def _internal(dist: BaseDistribution, value: Any) -> float:
    try:
        return float(dist.to_internal_repr(value))
    except (ValueError, TypeError) as exc:  # Optuna's own path raises it where it should
        raise Unsupported(str(exc)) from exc
