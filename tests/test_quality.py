"""The package's static checks run with the tests: one command for people and CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("tool", [["ruff", "check", "src", "tests"], ["mypy"]])
def test_static_checks_pass(tool: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", *tool], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_public_api_is_declared() -> None:
    import clonesweep

    assert sorted(clonesweep.__all__) == sorted(set(clonesweep.__all__))
    for name in clonesweep.__all__:
        assert hasattr(clonesweep, name), name
    assert {"build_variant", "load_sweep", "run_sweep", "TrialSpec", "TrialResult",
            "SpecError", "run", "ensemble", "SweepResult", "EnsembleResult"} <= set(
        clonesweep.__all__)


def test_unit_tests_mirror_the_package() -> None:
    """tests/unit/<path>/test_<module>[_<aspect>].py tests src/clonesweep/<path>/<module>.py
    (tests/README.md): a unit test file names a module that exists where it sits."""
    src, unit = REPO / "src" / "clonesweep", REPO / "tests" / "unit"
    astray = []
    for test in sorted(unit.rglob("test_*.py")):
        folder = src / test.parent.relative_to(unit)
        name = test.stem.removeprefix("test_")
        modules = [p.stem for p in folder.glob("*.py")] if folder.is_dir() else []
        if not any(name == m or name.startswith(f"{m}_") for m in modules):
            astray.append(f"{test.relative_to(REPO)}: no {folder.relative_to(REPO)}/"
                          f"{name.split('_')[0] or name}*.py")
    assert not astray, "unit tests that mirror no module:\n" + "\n".join(astray)
