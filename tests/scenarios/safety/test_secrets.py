"""A storage password never travels in a URL: refused in every URL form, with the hint to
use $CLONESWEEP_STORAGE_PASSWORD or --storage-password-file; given that way, it is masked in
every output whatever characters it holds; a plain postgresql:// URL works with the driver
the `postgres` extra installs (psycopg2)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from clonesweep.cli.main import main
from clonesweep.spec.settings import PASSWORD_ENV, check_storage_url, has_password, mask_url
from tests_support import database_text

#: space, '/', '@', '%', ':' and '+' in one password; its pieces are looked for in outputs
ODD = "Zq7 x/y@w%v:k+j"
PIECES = ("Zq7", "x/y", "w%v", "k+j", "Zq7%20", "x%2Fy")

FORMS = [
    "postgresql://u:{pw}@127.0.0.1:1/db",
    "postgresql+psycopg2://u:{pw}@127.0.0.1:1/db",
    "postgresql+psycopg://u:{pw}@127.0.0.1:1/db",
    "mysql+pymysql://u:{pw}@127.0.0.1:1/db",
    "postgresql://u@127.0.0.1:1/db?password={pw}",
    "postgresql+psycopg2://u@127.0.0.1:1/db?sslmode=disable&password={pw}",
    "postgresql://u@127.0.0.1:1/db?PassWord={pw}",
    "postgresql://u@127.0.0.1:1/db?connect_timeout=5&passwd={pw}",
]


def _leaked(text: str) -> list[str]:
    return [piece for piece in PIECES if piece in text]


@pytest.mark.parametrize("form", FORMS)
def test_a_password_in_any_url_form_is_refused(form: str) -> None:
    from clonesweep.errors import SpecError

    for password in (ODD, "1234", "pw"):
        url = form.format(pw=password)
        assert has_password(url)
        with pytest.raises(SpecError) as info:
            check_storage_url(url, file="s.yaml", field="sweep.storage")
        text = str(info.value)
        assert "$CLONESWEEP_STORAGE_PASSWORD" in text and "--storage-password-file" in text
        if password == ODD:
            assert not _leaked(text), text


@pytest.mark.parametrize("url", [
    "postgresql://u@db:5432/studies", "postgresql+psycopg2://u@db/studies?sslmode=require",
    "mysql+pymysql://u@db/x", "sqlite:////tmp/a:b@c/study.db", "journal:///tmp/x@y:1/j.log",
    "postgresql://db:5432/studies?application_name=a@b",
])
def test_urls_without_a_password_pass(url: str) -> None:
    assert check_storage_url(url).endswith(url.split("://", 1)[1])


def test_a_plain_postgresql_url_gets_the_installed_driver() -> None:
    assert check_storage_url("postgresql://u@db/x") == "postgresql+psycopg2://u@db/x"
    assert check_storage_url("postgresql+psycopg://u@db/x") == "postgresql+psycopg://u@db/x"


@pytest.mark.parametrize("form", FORMS)
def test_mask_url_hides_any_password(form: str) -> None:
    url = form.format(pw=ODD)
    for text in (url, f"storage {url} failed", f"'{url}'", f"got {url!r}\nnext line"):
        masked = mask_url(text)
        assert not _leaked(masked), masked
        assert "***" in masked


@pytest.mark.parametrize("command", ["validate", "run", "status", "best"])
@pytest.mark.parametrize("where", ["file", "flag"])
def test_the_cli_refuses_it_and_prints_no_piece_of_it(
        where: str, command: str, sweep_file: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = FORMS[1].format(pw=ODD)
    extra = f"\n  storage: '{url}'" if where == "file" else ""
    path = sweep_file(name="secret", trials=1, epochs=1, sweep_extra=extra)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    argv = [command, str(path)] + (["--storage", url] if where == "flag" else [])
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "$CLONESWEEP_STORAGE_PASSWORD" in err and "field '" in err, err
    assert not _leaked(out + err), out + err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# -- a real PostgreSQL role whose password holds every awkward character --------------------
@pytest.fixture(scope="module")
def odd_role(postgres_server: Any) -> Iterator[str]:
    """A role ``odd`` with password ODD owning a database ``odd``; yields the URL without
    the password, in the plain ``postgresql://`` form."""
    import psycopg2
    from psycopg2 import sql
    from psycopg2.extensions import encrypt_password

    from pgserver import ADMIN

    conn = psycopg2.connect(host=str(postgres_server.socket_dir), port=postgres_server.port,
                            user=ADMIN, dbname="postgres", connect_timeout=30)
    conn.autocommit = True
    role = f"odd{uuid.uuid4().hex[:6]}"
    try:
        with conn.cursor() as cur:
            verifier = encrypt_password(ODD, role, conn, "scram-sha-256")
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier)))
            cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(role), sql.Identifier(role)))
        yield f"postgresql://{role}@127.0.0.1:{postgres_server.port}/{role}"
    finally:
        with contextlib.suppress(Exception), conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(role)))
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.close()


@pytest.mark.parametrize("source", ["env", "file"])
def test_an_odd_password_works_and_shows_nowhere(
        source: str, odd_role: str, sweep_file: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    name = f"odd-{source}-{uuid.uuid4().hex[:6]}"
    path = sweep_file(name=name, trials=1, epochs=1)
    flags = ["--storage", odd_role]
    if source == "file":
        secret = tmp_path / "pw"
        secret.write_text(ODD + "\n")
        flags += ["--storage-password-file", str(secret)]
    outputs = []
    for argv in (["run", str(path), "--backend", "inprocess", *flags],
                 ["run", str(path), "--backend", "inprocess", "--json", "--trials", "2",
                  *flags],
                 ["validate", str(path), *flags], ["status", str(path), "--json", *flags]):
        if source == "env":
            monkeypatch.setenv(PASSWORD_ENV, ODD)
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, err[-3000:]
        outputs.append(out + err)
    assert "+psycopg2://" in outputs[2], outputs[2]  # the plain URL got the extra's driver
    assert not _leaked("\n".join(outputs)), "a piece of the password was printed"
    run_folder = path.parent / "runs" / name
    files = [p for p in run_folder.rglob("*") if p.is_file()]
    assert {"summary.json", "sweep.yaml"} <= {p.name for p in files}
    leaks = [p.name for p in files if _leaked(p.read_bytes().decode("utf-8", "replace"))]
    assert not leaks, f"a piece of the password is in {leaks}"
    with_odd = make_url(check_storage_url(odd_role)).set(password=ODD)
    assert not _leaked(database_text(with_odd)), "a piece of the password is in the study"


def test_a_wrong_odd_password_is_masked(odd_role: str, sweep_file: Any,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = sweep_file(name="odd-wrong", trials=1, epochs=1)
    wrong = ODD[::-1]
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    assert main(["run", str(path), "--storage", odd_role]) == 2
    err = capsys.readouterr().err
    assert "password authentication failed" in err, err
    assert wrong not in err and "v%w" not in err and "y/x" not in err, err
    assert not (path.parent / "runs").exists()
    assert os.environ.get(PASSWORD_ENV) is None
