"""Helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

PARAMETERS = """
  layers.hidden.units: {values: [8, 16]}
  optimizer.learning_rate: {min: 0.001, max: 0.01, log: true}"""
OPTIMIZER = "{name: adam, learning_rate: 0.003}"
LOSS = "sparse_categorical_crossentropy"
# Two objectives, for the multi-objective cases: objective=PARETO.
PARETO = ("[{metric: val_accuracy, direction: maximize}, "
          "{metric: param_count, direction: minimize}]")


def write_sweep(folder: Path, *, name: str = "tiny", trials: int = 2, parallel: int = 1,
                epochs: int = 2, parameters: str = PARAMETERS, sweep_extra: str = "",
                training_extra: str = "", limit: int = 400,
                objective: str = "{metric: val_accuracy, direction: maximize}",
                model: str = "config: model.json", sweep: str = "sampler: {name: random, seed: 0}",
                optimizer: str | None = OPTIMIZER, loss: str | None = LOSS,
                loader: str = "clonesweep.datasets:digits", run_dir: str | Path = "runs",
                extra: str = "") -> Path:
    """The tests' one sweep-file writer: a small digits-MLP sweep (and its model config,
    ``model.json``) in ``folder``; returns the file's path.

    Every block can be replaced: ``parameters`` (indented lines under ``parameters:``),
    ``objective`` and ``model`` (YAML values), ``sweep`` (lines of the sweep block, the sampler
    by default; continue with ``"\\n  "``), ``sweep_extra`` / ``training_extra`` (lines
    appended to those blocks, each starting ``"\\n  "``), ``extra`` (top-level blocks).
    ``optimizer`` / ``loss`` set to None leave the key out (the loader's default);
    ``loader`` is the data loader (``module:function``, called with ``limit``).
    A test of a deliberately broken file writes its text itself.
    """
    shutil.copy(CONFIGS / "digits_mlp.json", folder / "model.json")
    compiled = (f"\n  optimizer: {optimizer}" if optimizer is not None else "") + (
        f"\n  loss: {loss}" if loss is not None else "")
    text = f"""
name: {name}
model: {{{model}}}
data:
  loader: {loader}
  kwargs: {{limit: {limit}}}
training:
  epochs: {epochs}
  batch_size: 64{compiled}
  metrics: [accuracy]{training_extra}
objective: {objective}
parameters:{parameters}
{extra}
sweep:
  trials: {trials}
  parallel: {parallel}
  {sweep}
  run_dir: {run_dir}{sweep_extra}
"""
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def counting_loader(folder: Path) -> tuple[str, Path]:
    """A data loader that writes one line (its process id) to a file at every call, then
    returns ``clonesweep.datasets.digits(limit)``: a module in ``folder`` (put it on the
    path); returns its ``module:function`` and the file of calls."""
    calls = folder / "loader_calls.txt"
    # A name of its own per folder: a module imported by an earlier test stays in sys.modules.
    module = f"counted_data_{abs(hash(str(folder))):x}"
    (folder / f"{module}.py").write_text(
        "import os\n"
        "from clonesweep.datasets import digits\n\n\n"
        "def load(limit):\n"
        f"    with open({str(calls)!r}, 'a') as out:\n"
        "        out.write(f'{os.getpid()}\\n')\n"
        "    return digits(limit=limit)\n")
    return f"{module}:load", calls


def database_text(url: Any) -> str:
    """Every row of every table of the database at ``url`` (a SQLAlchemy URL, password
    included) as one text: what a leak check searches for a secret. Fails on an empty
    database (a search of nothing proves nothing)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = sqlalchemy.inspect(conn).get_table_names()
            rows = [list(row) for table in tables
                    for row in conn.execute(sqlalchemy.text(f'select * from "{table}"'))]
    finally:
        engine.dispose()
    assert rows, f"no rows in {tables}"
    return json.dumps(rows, default=str)


def in_ci() -> bool:
    """Whether ``CI`` is set: there .ci/run has installed everything the tests use."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str) -> NoReturn:
    """Skip the test for want of ``what`` here; under CI (:func:`in_ci`) fail it instead."""
    import pytest

    if in_ci():
        pytest.fail(f"CI is set but {what}", pytrace=False)
    pytest.skip(what)


def pids_with_env(variable: str, value: str) -> list[int]:
    """Processes (other than this one) whose environment holds ``variable=value``: the ones a
    test started and marked, so it can kill exactly those and nothing else on the machine."""
    needle = f"{variable}={value}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids
