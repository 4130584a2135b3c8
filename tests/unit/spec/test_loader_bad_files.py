"""Every bad sweep file raises SpecError naming the file, the field and the value, and
leaves nothing behind on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from bad_sweep_files import CASES, HEAD, write_model_files
from clonesweep.errors import ConfigPathError, SpecError
from clonesweep.spec import load_sweep


def _snapshot(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return write_model_files(tmp_path)


@pytest.mark.parametrize(("text", "field", "value"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_sweep_file(workdir: Path, text: str, field: str | None, value: str) -> None:
    sweep = workdir / "sweep.yaml"
    sweep.write_text(text)
    before = _snapshot(workdir)
    with pytest.raises(SpecError) as info:
        load_sweep(str(sweep))
    message = str(info.value)
    assert message.startswith(str(sweep)), message
    assert info.value.file == str(sweep)
    if field is not None:
        assert f"field '{field}'" in message, message
        assert info.value.field == field
    assert value in message, message
    assert _snapshot(workdir) == before


@pytest.mark.parametrize(("text", "field", "value"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_cli_exits_2_and_creates_no_study(workdir: Path, text: str, field: str | None,
                                          value: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from clonesweep.cli.main import main

    monkeypatch.chdir(workdir)  # the default run folder would go under ./runs
    sweep = workdir / "sweep.yaml"
    sweep.write_text(text)
    before = _snapshot(workdir)
    assert main(["run", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert str(sweep) in err and value in err, err
    if field is not None:
        assert f"field '{field}'" in err, err
    assert _snapshot(workdir) == before


def test_layer_errors_are_config_path_errors(workdir: Path) -> None:
    sweep = workdir / "sweep.yaml"
    sweep.write_text(HEAD + "parameters:\n  layers[Dens].units: {values: [8]}\n")
    with pytest.raises(ConfigPathError, match="did you mean 'Dense'"):
        load_sweep(sweep)


def test_missing_sweep_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="not found") as info:
        load_sweep(missing)
    assert str(missing) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_empty_sweep_file(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(SpecError, match="empty"):
        load_sweep(tmp_path / "empty.yaml")


def test_storage_password_is_not_echoed(workdir: Path) -> None:
    sweep = workdir / "sweep.yaml"
    sweep.write_text(HEAD + "sweep: {storage: 'redis://user:hunter2@host/0'}\n")
    with pytest.raises(SpecError) as info:
        load_sweep(sweep)
    assert "hunter2" not in str(info.value)
    assert "user:***@host" in str(info.value)


def test_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20
