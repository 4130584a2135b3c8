"""Failures that repeat with the same message stop the sweep (orchestrator/failstreak.py):
the rule on its own, then the loop on the scripted backend (no Keras, no Ray, milliseconds).
The real-Keras sweep that stops this way is tests/faults/test_trial_faults.py's."""

from __future__ import annotations

import doctest
from pathlib import Path
from typing import Any

import optuna
import pytest

from clonesweep.errors import SweepFailed
from clonesweep.orchestrator import base_model_config, failstreak
from clonesweep.orchestrator.failstreak import REPEATS_BEFORE_STOP, FailureStreak, normalised
from clonesweep.orchestrator.study.storage import load_study, storage_url
from clonesweep.orchestrator.sweep import RunOptions, SweepOutcome, run_sweep
from clonesweep.orchestrator.testing import Complete, Fail, FakeBackend, Outcome
from clonesweep.spec import SweepSpec, load_sweep
from clonesweep.trials import FailReason, TrialResult, TrialSpec, TrialState
from tests_support import write_sweep

S = optuna.trial.TrialState


def _spec(tmp_path: Path, trials: int, parallel: int = 1, extra: str = "") -> SweepSpec:
    extra += f"\n  storage: journal://{tmp_path / 'study.journal'}"
    return load_sweep(write_sweep(tmp_path, trials=trials, parallel=parallel,
                                  sweep_extra=extra))


def _sweep(spec: SweepSpec, backend: FakeBackend, **options: Any) -> SweepOutcome:
    return run_sweep(spec, base_model_config(spec), backend, options=RunOptions(**options))


def _trials(spec: SweepSpec) -> list[optuna.trial.FrozenTrial]:
    return load_study(spec.name, storage_url(spec)).get_trials()


def _failed(number: int, reason: FailReason, message: str) -> TrialResult:
    return TrialResult.failed(TrialSpec(number, {}, 0), reason, message)


# -- the rule --------------------------------------------------------------------------------
def test_the_docstring_example_holds() -> None:
    result = doctest.testmod(failstreak)
    assert result.attempted == 1 and result.failed == 0


@pytest.mark.parametrize(("one", "other"), [
    ("data loader failed at trial 3: /tmp/a/x.py:12", "data loader failed at trial 4: "
                                                      "/home/b/y.py:80"),
    ("loss 1.5e-3 at step -2", "loss 0.25 at step 7"),
    ("ActorDiedError: actor 9f8e7d6c5b4a3f2e died (pid 123)",
     "ActorDiedError: actor 0a1b2c3d4e5f6071 died (pid 99)"),
    ("  File \"C:\\u\\l.py\", line 3", "  File \"./l.py\", line 30"),
])
def test_messages_differing_in_numbers_paths_and_ids_match(one: str, other: str) -> None:
    assert normalised(one) == normalised(other)


@pytest.mark.parametrize(("one", "other"), [
    ("No module named 'loader'", "No module named 'layers'"),
    ("metric val_loss/val_acc missing", "metric val_loss/val_mae missing"),
    ("units must be positive", "rate must be in [0, 1)"),
])
def test_messages_that_say_different_things_differ(one: str, other: str) -> None:
    assert normalised(one) != normalised(other)


def test_the_streak_counts_alike_failures_and_anything_else_resets_it() -> None:
    streak = FailureStreak()
    oom, user = FailReason.OOM, FailReason.USER_ERROR
    assert not streak.see(_failed(0, oom, "out of memory on node 1"))
    assert not streak.see(_failed(1, oom, "out of memory on node 2"))
    assert not streak.see(_failed(2, user, "out of memory on node 3"))  # another reason
    assert not streak.see(_failed(3, user, "out of memory on node 4"))
    assert not streak.see(_failed(3, user, "out of memory on node 4"))  # told again: once
    assert not streak.see(_failed(4, FailReason.INTERRUPTED, "cut"))  # re-queued: not seen
    assert streak.see(_failed(5, user, "out of memory on node 5"))
    assert streak.numbers == [2, 3, 5]
    assert streak.see(TrialResult(6, TrialState.COMPLETE, value=1.0))  # stopped stays stopped
    assert "(user_error; trials 2, 3, 5): out of memory on node 5" in streak.message()


def test_the_stop_message_shows_the_error_before_its_traceback() -> None:
    """Keras wraps a layer's error: its own text is on the lines after the first."""
    keras_style = ("ValueError: Exception encountered when calling Trap.call().\n\n"
                   "\x1b[1mtrap: failed on purpose\x1b[0m\n\nArguments received by "
                   "Trap.call():\n  \u2022 inputs=tf.Tensor(shape=(None, 16))\nTraceback "
                   "(most recent call last):\n  File \"/x/layers.py\", line 22, in call\n")
    streak = FailureStreak()
    for n in range(3):
        streak.see(_failed(n, FailReason.USER_ERROR, keras_style))
    assert streak.message().splitlines()[0].endswith(
        "(user_error; trials 0, 1, 2): ValueError: Exception encountered when calling "
        "Trap.call(). trap: failed on purpose")


@pytest.mark.parametrize("between", [
    TrialResult(1, TrialState.COMPLETE, value=0.5),
    TrialResult(1, TrialState.PRUNED),
    _failed(1, FailReason.USER_ERROR, "another message"),
    _failed(1, FailReason.NAN_LOSS, "loss became nan in epoch 2"),
])
def test_any_other_outcome_between_them_resets_the_count(between: TrialResult) -> None:
    streak = FailureStreak()
    results = [_failed(0, FailReason.WORKER_DIED, "died")]
    results += [between]
    results += [_failed(n, FailReason.WORKER_DIED, "died") for n in (2, 3)]
    assert not any(streak.see(r) for r in results)
    assert streak.see(_failed(4, FailReason.WORKER_DIED, "died"))


@pytest.mark.parametrize("reason", [FailReason.NAN_LOSS, FailReason.TIMEOUT])
def test_outcomes_of_the_sampled_values_never_stop_the_sweep(reason: FailReason) -> None:
    streak = FailureStreak()
    assert not any(streak.see(_failed(n, reason, "loss became nan in epoch 2"))
                   for n in range(10))


# -- the loop --------------------------------------------------------------------------------
def test_a_repeating_user_error_stops_the_sweep_with_its_message_and_a_hint(
        tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=20)
    script: dict[int, Outcome] = {0: Complete()}  # something completed: not the old rule
    script |= {n: Fail(FailReason.USER_ERROR, f"ValueError: row {n} of /data/{n}.csv is empty")
               for n in range(1, 20)}
    backend = FakeBackend(script)
    with pytest.raises(SweepFailed) as info:
        _sweep(spec, backend)
    message = str(info.value)
    assert f"stopped after {REPEATS_BEFORE_STOP} trials failed in a row with the same error " \
           "(user_error; trials 1, 2, 3): ValueError: row 3 of /data/3.csv is empty" in message
    assert "hint: fix the code" in message and "clonesweep resume FILE" in message
    assert len(backend.submitted) == 4 and len(_trials(spec)) == 4  # nothing more asked
    # The trial that completed keeps its model.
    assert (spec.run_folder / "best.keras").read_bytes() == b"fake keras model"


def test_running_trials_finish_after_the_stop(tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=20, parallel=2)
    script: dict[int, Outcome] = {0: Complete(epochs=8)}  # still training at the stop
    script |= {n: Fail(FailReason.GPU_OOM, f"OOM allocating tensor of shape [{n}, 64]")
               for n in range(1, 20)}
    with pytest.raises(SweepFailed, match=r"\(gpu_oom; trials 1, 2, 3\).*\n"
                                          r"hint: each trial runs out of GPU memory"):
        _sweep(spec, FakeBackend(script))
    trials = _trials(spec)
    assert [t.state for t in trials] == [S.COMPLETE, S.FAIL, S.FAIL, S.FAIL]


def test_a_worker_that_dies_on_every_trial_stops_the_sweep_after_its_retries(
        tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=10, extra="\n  retries: 1")
    script: dict[int, Outcome] = {0: Complete()}
    script |= {n: Fail(FailReason.WORKER_DIED, f"worker 0 (pid {4000 + n}) died: SIGSEGV")
               for n in range(1, 10)}
    backend = FakeBackend(script)
    with pytest.raises(SweepFailed, match=r"\(worker_died; trials 1, 2, 3\).*SIGSEGV"):
        _sweep(spec, backend)
    # Each failed trial ran twice (a retry each), and counted once.
    assert sorted((s.number, s.attempt) for s in backend.submitted) == [
        (0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]


def test_outcomes_between_the_failures_let_the_sweep_reach_its_budget(tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=9, extra="\n  pruner: {name: threshold, lower: 0.3}")
    oom = Fail(FailReason.OOM, "host out of memory")
    script: dict[int, Outcome] = {
        0: oom, 1: oom, 2: Complete(value=0.1),  # pruned
        3: oom, 4: oom, 5: Complete(value=0.9),
        6: oom, 7: oom, 8: Fail(FailReason.NAN_LOSS, "loss became nan in epoch 1")}
    outcome = _sweep(spec, FakeBackend(script))
    assert outcome.counts.finished == 9 and outcome.counts.pruned == 1
    assert outcome.counts.complete == 1
    assert outcome.failures == {"oom": 6, "nan_loss": 1}


def test_same_reason_with_other_messages_runs_to_the_budget(tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=6)
    script: dict[int, Outcome] = {0: Complete()}
    script |= {n: Fail(FailReason.USER_ERROR, message)
               for n, message in enumerate(["KeyError: 'a'", "KeyError: 'b'", "TypeError",
                                            "KeyError: 'c'", "IndexError"], start=1)}
    outcome = _sweep(spec, FakeBackend(script))
    assert outcome.counts.finished == 6 and outcome.counts.failed == 5


def test_a_resume_after_the_stop_continues_the_sweep(tmp_path: Path) -> None:
    spec = _spec(tmp_path, trials=6)
    broken = {n: Fail(FailReason.USER_ERROR, f"broken in trial {n}") for n in range(6)}
    with pytest.raises(SweepFailed, match="broken in trial 2"):
        _sweep(spec, FakeBackend(broken))
    outcome = _sweep(spec, FakeBackend())  # the cause fixed: every trial completes
    assert outcome.already_finished == 3 and outcome.counts.complete == 3
