"""The progress views, fed the loop's events by hand and rendered at fixed sizes.

The terminal view draws on a Rich console of a fixed width (what a pseudo-terminal of that
size shows); time comes from a clock the test moves, never from sleeps.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from rich.console import Console

from clonesweep.cli.events import EVENTS, FanOut, JsonLinesProgress
from clonesweep.cli.progress import LineProgress, TerminalProgress
from clonesweep.orchestrator.sweep import BestTrial, Counts, SweepOutcome
from clonesweep.spec import load_sweep
from clonesweep.spec.model import SweepSpec
from clonesweep.trials import FailReason, Timings, TrialResult, TrialSpec, TrialState
from tests_support import REPO

LONG = {"layers.hidden.units": 256, "layers[Dropout].rate": 0.123456,
        "optimizer.learning_rate": 0.000123, "layers.hidden.kernel_regularizer.config.l2": 1e-5,
        "train.epochs": 4}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def spec(sweep_file: Any) -> SweepSpec:
    return load_sweep(sweep_file(trials=6, parallel=2, epochs=3))


def _script(view: Any, spec: SweepSpec, clock: Clock) -> None:
    """A sweep in events: two running trials with epochs, one pruned, one failed on
    invalid_config before it ran, one complete, one retried."""
    counts = Counts()
    view.on_start(spec, "sqlite:///runs/tiny/study.db", 0)
    clock.now += 20  # start-up: Ray and Keras; the estimate must not count it
    view.on_trial_start(TrialSpec(0, dict(LONG), 11))
    view.on_trial_start(TrialSpec(1, {"layers.hidden.units": 8}, 12))
    view.on_tick(counts, None, 20.0)
    clock.now += 2
    view.on_epoch(0, 0, 0.5)
    view.on_epoch(1, 0, 0.25)
    view.on_epoch(1, 1, 0.3125)
    view.on_tick(counts, None, 22.0)
    counts.pruned, counts.running = 1, 1
    view.on_trial_end(TrialResult(1, TrialState.PRUNED, message="pruned after epoch 2",
                                  history={"val_accuracy": [0.25, 0.3125]},
                                  timings=Timings(train_s=1.5)), counts, None, False)
    view.on_trial_start(TrialSpec(2, {"layers.hidden.units": 0}, 13))
    counts.failed, counts.running = 1, 1
    view.on_trial_end(TrialResult.failed(TrialSpec(2, {}, 13), FailReason.INVALID_CONFIG,
                                         "could not rebuild layer 'hidden': units=0"),
                      counts, None, False)
    clock.now += 2
    view.on_epoch(0, 1, 0.75)
    counts.complete, counts.running = 1, 0
    best = BestTrial(0, 0.8, dict(LONG))
    view.on_trial_end(TrialResult(0, TrialState.COMPLETE, value=0.8,
                                  history={"val_accuracy": [0.5, 0.75, 0.8, 0.8]},
                                  timings=Timings(train_s=3.0)), counts, best, False)
    view.on_trial_start(TrialSpec(3, {"layers.hidden.units": 16}, 14))
    counts.retried, counts.running = 1, 1
    view.on_trial_end(TrialResult.failed(TrialSpec(3, {}, 14), FailReason.WORKER_DIED,
                                         "worker died"), counts, best, True)
    clock.now += 1
    view.on_tick(counts, best, 25.0)


def _outcome(spec: SweepSpec) -> SweepOutcome:
    return SweepOutcome(spec.name, "sqlite:///x", spec.run_folder, Counts(1, 1, 1, 0, 1), 6, 0,
                        BestTrial(0, 0.8, dict(LONG)), None, 25.0, {"train": 4.5})


@pytest.mark.parametrize("width", [80, 200])
def test_terminal_view_fits_its_width(spec: SweepSpec, width: int) -> None:
    clock = Clock()
    out = io.StringIO()
    console = Console(file=out, width=width, height=30, force_terminal=True,
                      color_system=None, record=True)
    view = TerminalProgress(out, clock=clock, console=console)
    _script(view, spec, clock)
    live = _lines(width, view.live_view())
    view.on_end(_outcome(spec))
    drawn = [_ANSI.sub("", line) for line in re.split(r"[\r\n]", out.getvalue())]
    assert max(len(line) for line in drawn) <= width
    assert all(len(line) <= width for line in live)
    # The running trial's row, with epoch k/N and its latest value; then the status line.
    running = [line for line in live if "running" in line.split()[:2]]
    assert len(running) == 1 and running[0].split()[0] == "3"
    assert "0/3" in running[0]
    status = live[-1]
    assert status.startswith("done 3/6 | running 1 | ~")  # an estimate, start-up not counted
    # Finished rows keep their columns: the value column ends at the same place in each.
    rows = {line.split()[1]: line for line in drawn if re.match(r"^\s+[0-3] \S", line)}
    assert set(rows) >= {"pruned", "fail:invalid_config", "complete", "retry:worker_died"}
    assert "0.3125" in rows["pruned"] and "2/3" in rows["pruned"]
    assert "0.8000" in rows["complete"] and "4/4" in rows["complete"]
    assert len({epoch_end(r) for r in rows.values()}) == 1
    # Params with brackets are shown as text, not read as markup.
    if width == 200:
        assert "layers[Dropout].rate=0.1235" in rows["complete"]
    else:
        assert rows["complete"].rstrip().endswith("…")


@pytest.mark.parametrize("width", [80, 200])
def test_pseudo_terminal_shows_no_stale_lines(spec: SweepSpec, width: int) -> None:
    """The bytes the view writes, played on a terminal emulator of that size: while the
    sweep runs, one row per running trial and one status line; when it ends, neither."""
    import pyte

    screen = pyte.Screen(width, 40)
    screen.set_mode(pyte.modes.LNM)  # a tty turns "\n" into "\r\n" (onlcr)
    stream = pyte.Stream(screen)
    clock, out = Clock(), io.StringIO()
    console = Console(file=out, width=width, height=40, force_terminal=True,
                      color_system="standard")
    view = TerminalProgress(out, clock=clock, console=console)
    _script(view, spec, clock)
    stream.feed(out.getvalue())
    shown = [line.rstrip() for line in screen.display if line.strip()]
    assert sum(line.startswith("done ") for line in shown) == 1, shown
    assert [line.split()[0] for line in shown if line.split()[1] == "running"] == ["3"]
    for number in "012":  # each finished trial once, its row not repeated by redraws
        assert sum(line.startswith(f"    {number} ") for line in shown) == 1, shown
    assert shown[-1].startswith("done 3/6 | running 1")
    written = len(out.getvalue())
    view.on_end(_outcome(spec))
    stream.feed(out.getvalue()[written:])
    shown = [line.rstrip() for line in screen.display if line.strip()]
    assert not any(line.startswith("done 3/6") or line.split()[1:2] == ["running"]
                   for line in shown)
    assert any(line.startswith("done in 00:25") for line in shown)


def epoch_end(row: str) -> int:
    """Where a row's epoch column ("k/N") ends: the same in every row if columns hold."""
    found = re.search(r" \d+/\d+ ", row)
    assert found is not None, row
    return found.end()


def _lines(width: int, renderable: Any) -> list[str]:
    """The renderable as a console of that width draws it (apart from the live one)."""
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    with console.capture() as capture:
        console.print(renderable)
    return [_ANSI.sub("", line) for line in capture.get().splitlines()]


def test_estimate_waits_for_the_first_trial(spec: SweepSpec) -> None:
    clock = Clock()
    view = TerminalProgress(io.StringIO(), clock=clock,
                            console=Console(file=io.StringIO(), width=80, color_system=None))
    view.on_start(spec, "x", 0)
    clock.now += 600  # a slow start must not turn into a long estimate
    view.on_trial_start(TrialSpec(0, {}, 1))
    view.on_tick(Counts(running=1), None, 600)
    assert "estimating" in view.tracker.status_parts()
    clock.now += 10
    view.on_trial_end(TrialResult(0, TrialState.COMPLETE, value=0.5), Counts(complete=1),
                      None, False)
    assert view.tracker.left_s() == pytest.approx(50.0)  # 5 left at one per 10 s
    view.close()


def test_piped_view_prints_a_status_line_every_30_s(spec: SweepSpec) -> None:
    clock, out = Clock(), io.StringIO()
    view = LineProgress(out, clock=clock)
    view.on_start(spec, "x", 0)
    view.on_trial_start(TrialSpec(0, {}, 1))
    for _ in range(250):  # 125 s of ticks every 0.5 s, one trial running throughout
        clock.now += 0.5
        view.on_tick(Counts(running=1), None, 0)
    statuses = [line for line in out.getvalue().splitlines() if line.startswith("status: ")]
    assert len(statuses) == 4  # at 30, 60, 90 and 120 s
    assert "done 0/6 | running 1 | estimating" in statuses[0]
    assert "\x1b" not in out.getvalue()


def test_piped_rows_keep_their_columns(spec: SweepSpec) -> None:
    clock, out = Clock(), io.StringIO()
    view = LineProgress(out, clock=clock)
    _script(view, spec, clock)
    view.on_end(_outcome(spec))
    text = out.getvalue()
    rows = [line for line in text.splitlines() if re.match(r"^\s+[0-3] \S", line)]
    assert len({epoch_end(r) for r in rows}) == 1
    assert "next:" in text and f"clonesweep report {spec.file}" in text


def test_json_lines_stream(spec: SweepSpec) -> None:
    clock, out, human = Clock(), io.StringIO(), io.StringIO()
    view = FanOut(JsonLinesProgress(out, clock=clock), LineProgress(human, clock=clock))
    _script(view, spec, clock)
    view.on_epoch(3, 0, float("nan"))
    view.on_end(_outcome(spec))
    view.close()
    events = [json.loads(line) for line in out.getvalue().splitlines()]  # strict JSON each
    assert events[0]["event"] == "run_started"
    assert events[-1]["event"] == "summary"
    assert {e["event"] for e in events} == set(EVENTS)
    epoch = next(e for e in events if e["event"] == "epoch")
    assert epoch == {"event": "epoch", "t": 22.0, "number": 0, "epoch": 1, "epochs": 4,
                     "metric": "val_accuracy", "value": 0.5}
    assert events[-2]["value"] is None  # NaN written as null
    pruned = next(e for e in events if e["event"] == "trial_finished" and e["number"] == 1)
    assert (pruned["state"], pruned["value"], pruned["epochs_done"]) == ("pruned", 0.3125, 2)
    failed = next(e for e in events if e["event"] == "trial_finished" and e["number"] == 2)
    assert (failed["state"], failed["reason"]) == ("fail", "invalid_config")
    assert events[-1]["best"]["number"] == 0 and events[-1]["run_folder"]
    assert "pruned" in human.getvalue()


def test_docs_list_every_event_field(spec: SweepSpec) -> None:
    """docs/json-events.md names every field each event carries."""
    clock, out = Clock(), io.StringIO()
    view = JsonLinesProgress(out, clock=clock)
    _script(view, spec, clock)
    view.on_end(_outcome(spec))
    doc = (REPO / "docs" / "json-events.md").read_text()
    sections = {m.group(1): m.start() for m in re.finditer(r"^### `(\w+)`", doc, re.M)}
    assert set(sections) == set(EVENTS)
    for event in (json.loads(line) for line in out.getvalue().splitlines()):
        start = sections[event["event"]]
        end = min([s for s in sections.values() if s > start] + [len(doc)])
        for key in event:
            assert f"`{key}`" in doc[start:end], (event["event"], key)
