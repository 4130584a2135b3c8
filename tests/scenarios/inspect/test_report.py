"""``clonesweep report``'s page, part by part, and in a real headless Chromium.

Sweeps run on the in-process backend with real Keras on tiny digits data: one sweep with two
ensembles (the default one from the best trial, a named one from the base config), and one
sweep whose every trial fails (a data loader that does not exist).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest

from clonesweep.cli.main import main
from clonesweep.errors import SweepFailed
from clonesweep.orchestrator import InProcessBackend, base_model_config, run_sweep
from clonesweep.orchestrator.commands.report import open_study_of
from clonesweep.orchestrator.commands.report_html import render_report
from clonesweep.orchestrator.commands.report_html.ensembles import find_ensembles
from clonesweep.orchestrator.ensemble.export import finish
from clonesweep.orchestrator.ensemble.run import EnsembleRequest, run_ensemble
from clonesweep.spec import load_sweep
from tests_support import PARETO, write_sweep

PLOTLY_BANNER = "* plotly.js v"  # the first line of the embedded library


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 4-trial sweep (3 searched params) and two ensembles of 2 members, in-process."""
    folder = tmp_path_factory.mktemp("report")
    path = write_sweep(folder, name="shared", trials=4, epochs=2, limit=200, parameters="""
  layers.hidden.units: {values: [8, 16]}
  optimizer.learning_rate: {min: 0.001, max: 0.05, log: true}
  train.batch_size: {values: [32, 64]}""")
    spec = load_sweep(path)
    base = base_model_config(spec)
    run_sweep(spec, base, InProcessBackend())
    for request in (EnsembleRequest(members=2, trial="best"),
                    EnsembleRequest(members=2, study="shared-ensemble-base")):
        finish(spec, run_ensemble(spec, base, InProcessBackend(), request))
    study = open_study_of(spec)
    return path, spec, study, render_report(spec, study)


def _text(page: str) -> str:
    """The page without its scripts and tags: what a reader sees outside the figures."""
    page = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    return re.sub(r"<[^>]+>", " ", page)


def _trials_table(page: str) -> str:
    match = re.search(r'<table class="sortable trials">.*?</table>', page, flags=re.S)
    assert match, "no table of trials"
    return match.group(0)


def test_the_trials_table_has_every_trial_and_its_columns(swept: Any) -> None:
    _, _, study, page = swept
    table = _trials_table(page)
    head = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", table.split("</thead>")[0])
    assert head[:3] == ["#", "state", "val_accuracy"]
    assert {"layers.hidden.units", "optimizer.learning_rate", "train.batch_size", "epochs",
            "duration s", "engine", "fail reason"} <= set(head)
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    assert len(rows) == len(study.get_trials()) == 4
    # Numbers sort by their full value (data-v) and show 4 significant digits.
    lr = study.get_trials()[0].params["optimizer.learning_rate"]
    assert f'data-v="{lr!r}"' in table and f">{lr:.4g}<" in table


def _long_numbers(text: str) -> list[str]:
    """Decimal numbers in ``text`` with more than 4 significant digits."""
    return [n for n in re.findall(r"\d+\.\d+", text)
            if len(n.replace(".", "").lstrip("0")) > 4]


def test_numbers_are_rounded_and_no_header_row_is_empty(swept: Any) -> None:
    page = swept[3]
    assert not _long_numbers(_text(page))
    assert "<th></th>" not in page and "<thead><tr></tr></thead>" not in page
    # Optuna's hover texts carry every value and param; they are rounded too.
    hovers = re.findall(r'"(?:hover)?text":(\[[^\]]*\]|"[^"]*")', page)
    assert hovers and not _long_numbers(" ".join(hovers))


def test_the_page_has_its_parts(swept: Any) -> None:
    _, _, study, page = swept
    titles = re.findall(r"<h[23][^>]*>(.*?)</h[23]>", page)
    for wanted in ("Learning curves", "Optimization history", "Parallel coordinates",
                   "Parameter importances", "Slices", "Contours", "Timeline",
                   "Members&#x27; spread against each ensemble"):
        assert any(t.startswith(wanted) for t in titles), (wanted, titles)
    assert page.count(PLOTLY_BANNER) == 1, "plotly.js embedded once"
    assert "Intermediate values" not in page  # learning curves replace Optuna's step plot
    assert f"Best trial #{study.best_trial.number} against the base model" in page
    env = study.get_trials()[0].user_attrs["environment"]
    assert f"<td>{env['keras']}</td>" in page and "keras_backend" in page


def test_learning_curves_have_train_and_validation_on_integer_epochs(swept: Any) -> None:
    page = swept[3]
    for title in ("train accuracy", "validation accuracy", "train loss", "validation loss"):
        assert f'"text":"{title}"' in page
    assert '"dtick":1' in page and '"tick0":1' in page and '"text":"epoch"' in page
    assert '"Step"' not in page


def test_every_ensemble_shows_its_members_spread(swept: Any) -> None:
    page = swept[3]
    assert "Ensembles (2)" in page
    for name in ("shared-ensemble", "shared-ensemble-base"):
        assert f"<h3>{name}</h3>" in page
    assert page.count('"type":"box"') == 2 and '"boxpoints":"all"' in page
    assert "the ensemble (mean prediction)" in page
    assert "Best Value" not in page.split('id="ensembles"')[1]  # no optimization history
    assert "trial " in page and "of study &#x27;shared&#x27;" in page  # params' source


def test_an_all_failed_sweep_says_why_on_top_without_plots(sweep_file: Any,
                                                            tmp_path: Path) -> None:
    path = sweep_file(name="broken", trials=4, epochs=1, limit=200,
                      loader="clonesweep.datasets:no_such_loader")
    spec = load_sweep(path)
    with pytest.raises(SweepFailed):
        run_sweep(spec, base_model_config(spec), InProcessBackend())
    out = tmp_path / "broken.html"
    assert main(["report", str(path), "--out", str(out)]) == 0
    page = out.read_text()
    top = page.split("<table")[0]
    assert '<div class="alert">' in top and "No trial completed" in top
    assert "user_error" in top and "no_such_loader" in top
    assert PLOTLY_BANNER not in page and '<section class="plot">' not in page
    assert len(page) < 100_000, len(page)
    assert 'id="failures"' in page and page.count("<details>") == 3


def test_a_multi_objective_sweep_shows_its_pareto_front(sweep_file: Any) -> None:
    path = sweep_file(name="pareto", trials=3, epochs=1, limit=200, objective=PARETO)
    spec = load_sweep(path)
    run_sweep(spec, base_model_config(spec), InProcessBackend())
    study = open_study_of(spec)
    page = render_report(spec, study)
    head = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", _trials_table(page).split("</thead>")[0])
    assert head[2:4] == ["val_accuracy", "param_count"]
    assert "<h3>Pareto front</h3>" in page and "Optimization history" not in page
    front = sorted(t.number for t in study.best_trials)
    assert f'<th scope="row">Pareto front</th><td>#{front[0]}: val_accuracy = ' in page
    assert "Not drawn" not in page.split("Pareto front</h3>")[1].split("</section>")[0]


def test_a_shared_storage_shows_this_sweeps_ensembles_only(sweep_file: Any,
                                                            tmp_path: Path) -> None:
    """Several sweeps in one storage: an ensemble belongs to the sweep its name starts with,
    or whose study its params came from (no training: the studies are written directly)."""
    url = f"sqlite:///{tmp_path / 'project.db'}"
    spec = load_sweep(sweep_file(name="mine", sweep_extra=f"\n  storage: {url}"))
    sweep = optuna.create_study(study_name="mine", storage=url, direction="maximize")
    scored = {"source": "the base config", "ensemble": {"val_accuracy": 0.5}, "table": []}
    for name, source in (("mine-ensemble", "trial 0 of study 'mine'"),
                         ("mine-seeds", "the base config"),
                         ("renamed", "trial 2 of study 'mine'"),
                         ("theirs-ensemble", "trial 0 of study 'theirs'"),
                         ("mine-v2-ensemble", "the base config"),
                         ("mine-v2-from-mine", "trial 1 of study 'mine'"),
                         ("unrelated", "the base config")):
        ens = optuna.create_study(study_name=name, storage=url, direction="maximize")
        ens.set_user_attr("ensemble", {**scored, "source": source})
        ens.add_trial(optuna.trial.create_trial(value=0.4, user_attrs={"member_index": 0}))
    optuna.create_study(study_name="mine-notes", storage=url)  # not an ensemble study
    other = optuna.create_study(study_name="mine-v2", storage=url)  # another sweep
    other.set_user_attr("base_config", "{}")
    found = [e.name for e in find_ensembles(spec, sweep)]
    assert found == ["mine-ensemble", "mine-seeds", "mine-v2-from-mine", "renamed"]


def test_cells_docstring_examples_hold() -> None:
    import doctest

    from clonesweep.orchestrator.commands.report_html import cells

    assert doctest.testmod(cells).failed == 0


def _chromium_dom(page: Path, profile: Path) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed")
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=20000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180).stdout


@pytest.mark.integration
def test_the_page_draws_and_sorts_in_chromium(swept: Any, tmp_path: Path) -> None:
    path, _, study, _ = swept
    out = tmp_path / "report.html"
    assert main(["report", str(path), "--out", str(out)]) == 0
    # Click the value column's header once (ascending), then record the rows' order.
    probe = ("<script>document.querySelectorAll('table.trials th')[2].click();"
             "document.body.setAttribute('data-order',Array.prototype.map.call("
             "document.querySelectorAll('table.trials tbody tr'),"
             "function(r){return r.cells[0].textContent;}).join(','));</script></body>")
    out.write_text(out.read_text().replace("</body>", probe))
    dom = _chromium_dom(out, tmp_path / "profile")
    sections = dom.split('<section class="plot">')[1:]
    assert len(sections) == 8, dom[:500]  # curves, 6 of Optuna's plots, ensembles' spread
    for section in sections:
        # plotly draws each figure into an <svg class="main-svg"> once its script has run.
        assert 'class="main-svg"' in section, section[:300]
    order = re.search(r'data-order="([^"]*)"', dom)
    assert order, "the sorting probe did not run"
    done = sorted((t for t in study.get_trials() if t.value is not None),
                  key=lambda t: t.value)
    numbers = [int(n) for n in order.group(1).split(",")]
    assert numbers[:len(done)] == [t.number for t in done]  # empty values sort last
    assert "ensemble 0." in dom  # the diamonds' labels, drawn as SVG text
