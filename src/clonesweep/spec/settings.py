"""The ``sweep`` block: budget, parallelism, sampler, pruner, storage, resources, seeds.

Sampler and pruner names are checked here; their settings pass through untouched and are
checked by the orchestrator when it builds the Optuna objects (so this package needs no
Optuna).

About 340 lines, past the usual 300: the ``sweep`` block's settings (storage URLs and their
passwords, projects, resources, retries) are checked here together, since each check's
hint names the other settings a user could change instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from clonesweep.errors import SpecError
from clonesweep.spec._fields import Block, did_you_mean, is_json_data, resolve_path
from clonesweep.spec.model import EnqueueFrom, PlugSpec, ResourcesSpec, SweepSettings

__all__ = ["PASSWORD_ENV", "PROJECT_ENV", "PRUNERS", "SAMPLERS", "STORAGE_SCHEMES",
           "check_storage_url", "has_password", "mask_url", "parse_settings", "project_url",
           "read_password_file", "with_password", "with_project"]

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "nsga2", "nsga3", "qmc", "bruteforce")
#: ``nop`` is read as ``none``: one name for "no pruning".
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "threshold", "patient",
           "wilcoxon", "none", "nop")
#: ``journal://<path>`` is clonesweep's own form: an Optuna JournalFileBackend at <path>.
STORAGE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg2://",
                   "postgresql+psycopg://", "mysql://",
                   "mysql+pymysql://", "journal://")
_KEYS = ("trials", "parallel", "sampler", "pruner", "storage", "run_dir", "resources",
         "retries", "trial_timeout", "resource_wait", "seed", "enqueue_from",
         "checkpoint_dir", "checkpoint_every_s", "tensorboard", "project")
_MAX_SEED = 2**32 - 1


def parse_settings(block: Block, base: Path) -> SweepSettings:
    """Read the ``sweep`` block; ``run_dir`` and file storages resolve against ``base``.

    Without ``run_dir`` the run folder goes under ``./runs`` of the working directory, where
    a user looks for it; a ``run_dir`` written in the file is relative to the file.
    """
    block.only(_KEYS)
    defaults = SweepSettings()
    given = block.string("run_dir", "")
    run_dir = base / Path(given).expanduser() if given else Path.cwd() / defaults.run_dir
    pruner = _plug(block, "pruner", PRUNERS, defaults.pruner)
    if pruner.name == "nop":
        pruner = PlugSpec("none", pruner.settings)
    return SweepSettings(
        trials=block.integer("trials", defaults.trials, low=1),
        parallel=block.integer("parallel", defaults.parallel, low=1),
        sampler=_seeded(block, _plug(block, "sampler", SAMPLERS, defaults.sampler)),
        pruner=pruner,
        storage=_storage_or_project(block, base),
        project=_project(block, base),
        run_dir=resolve_path(run_dir, file=block.file, field=block.field("run_dir"),
                             value=given or str(run_dir)),
        resources=_resources(block.sub("resources")),
        retries=block.integer("retries", defaults.retries, low=0),
        trial_timeout=_timeout(block),
        resource_wait=float(block.number("resource_wait", defaults.resource_wait,
                                         positive=True)),
        seed=block.integer("seed", defaults.seed, low=0, high=_MAX_SEED),
        enqueue_from=_enqueue_from(block, base),
        checkpoint_dir=_checkpoint_dir(block, base),
        checkpoint_every_s=float(block.number("checkpoint_every_s",
                                              defaults.checkpoint_every_s, low=0)),
        tensorboard=block.boolean("tensorboard", defaults.tensorboard),
    )


def _checkpoint_dir(block: Block, base: Path) -> Path | None:
    """``checkpoint_dir``: a folder every node reaches; relative to the sweep file."""
    given = block.string("checkpoint_dir", None)
    if given is None:
        return None
    return resolve_path(base / Path(given).expanduser(), file=block.file,
                        field=block.field("checkpoint_dir"), value=given)


def _seeded(block: Block, sampler: PlugSpec) -> PlugSpec:
    """A sampler ``seed`` is an int in [0, 2**32-1], like ``sweep.seed`` (numpy's range)."""
    if "seed" in sampler.settings:
        block.sub("sampler").integer("seed", low=0, high=_MAX_SEED)
    return sampler


def _enqueue_from(block: Block, base: Path) -> EnqueueFrom | None:
    """``enqueue_from: NAME`` or ``{study: NAME, storage: URL, top: N}``."""
    raw = block.raw("enqueue_from", None)
    if raw is None:
        return None
    if isinstance(raw, str):
        block.string("enqueue_from")
        return EnqueueFrom(raw)
    sub = block.sub("enqueue_from")
    sub.only(("study", "storage", "top"))
    storage = _storage(sub, base) if sub.has("storage") else None
    return EnqueueFrom(sub.string("study"), storage, sub.integer("top", 3, low=1))


def _plug(block: Block, key: str, names: tuple[str, ...], default: PlugSpec) -> PlugSpec:
    """``key: name`` or ``key: {name: ..., <setting>: ...}``."""
    raw = block.raw(key, None)
    if raw is None:
        return default
    if isinstance(raw, str):
        name, settings = raw, {}
    else:
        sub = block.sub(key)
        name = sub.string("name")
        settings = {k: v for k, v in sub.data.items() if k != "name"}
        for setting, value in settings.items():
            if not is_json_data(value):
                sub.fail(setting, "expected JSON data (numbers, strings, lists, mappings)",
                         value)
    if name not in names:
        field = key if isinstance(raw, str) else f"{key}.name"
        block.fail(field, f"unknown {key}", name, did_you_mean(name, names))
    return PlugSpec(name, settings)


#: The environment variable naming a project storage (``--project``'s default): read by
#: the command line and the Python API, used when neither the sweep file nor a flag names a
#: storage or a project.
PROJECT_ENV = "CLONESWEEP_PROJECT"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_PROJECT_HINT = ("a SQLite file (lab.db, .sqlite, .sqlite3) or a database URL "
                 "(postgresql://USER@HOST/DB); docs/sweep-file.md#projects")


def _project(block: Block, base: Path) -> str | None:
    given = block.string("project", None)
    if given is None:
        return None
    if block.has("storage"):
        block.fail("project", "give 'storage' or 'project', not both", given,
                   "a project is a storage shared by many sweeps: keep one of the two")
    project_url(given, base, file=block.file, field=block.field("project"))
    return str(given)


def _storage_or_project(block: Block, base: Path) -> str | None:
    if block.has("project") and not block.has("storage"):
        return project_url(block.string("project"), base, file=block.file,
                           field=block.field("project"))
    return _storage(block, base)


def project_url(project: str, base: Path, *, file: str | None, field: str) -> str:
    """The storage URL of a project: a SQLite file's path (relative to ``base``) or a
    database URL. A journal file is refused: it has one writer at a time, and a project's
    sweeps may run at once.

    Example:
        >>> project_url("/srv/lab.db", Path("/"), file=None, field="--project")
        'sqlite:////srv/lab.db'
    """
    given = str(project).strip()
    if given.startswith("journal://") or given.endswith((".log", ".journal", ".jsonl")):
        raise SpecError("a journal file cannot hold a project: it takes one writer at a time, "
                        "and a project's sweeps may run at once", file=file, field=field,
                        value=given, hint=_PROJECT_HINT)
    if "://" in given:
        return check_storage_url(given, file=file, field=field)
    if not given.endswith(_SQLITE_SUFFIXES):
        raise SpecError("not a project storage", file=file, field=field, value=given,
                        hint=_PROJECT_HINT)
    path = resolve_path(base / Path(given).expanduser(), file=file, field=field, value=given)
    return f"sqlite:///{path}"


def with_project(settings: SweepSettings, project: str, base: Path, *, file: str | None,
                 field: str) -> SweepSettings:
    """``settings`` with ``project`` as the storage (from ``--project`` or the
    environment), replacing whatever storage or project the file named."""
    from dataclasses import replace

    return replace(settings, storage=project_url(project, base, file=file, field=field),
                   project=project)


def _storage(block: Block, base: Path) -> str | None:
    raw = block.raw("storage", None)
    if raw is None:
        return None
    url = check_storage_url(raw, file=block.file, field=block.field("storage"))
    scheme = next(s for s in STORAGE_SCHEMES if url.startswith(s))
    if scheme in ("sqlite:///", "journal://"):
        rest = url[len(scheme):]
        if rest != ":memory:":
            path = resolve_path(base / rest, file=block.file, field=block.field("storage"),
                                value=url)
            return scheme + str(path) if not Path(rest).is_absolute() else url
    return url


def check_storage_url(url: Any, *, file: str | None = None, field: str | None = None) -> str:
    """Return ``url`` if it is a storage URL clonesweep can open, else raise SpecError.

    A password in the URL is refused, in any form (``user:PW@``, ``?password=PW``): a URL
    shows in process lists, shell history and the sweep file. A plain ``postgresql://``
    URL comes back as ``postgresql+psycopg2://``: SQLAlchemy 2.1 maps the plain scheme to
    psycopg 3, while the ``postgres`` extra installs psycopg2.

    Example:
        >>> check_storage_url("postgresql://sweeper@db/optuna")
        'postgresql+psycopg2://sweeper@db/optuna'
    """
    scheme = next((s for s in STORAGE_SCHEMES if isinstance(url, str) and url.startswith(s)),
                  None)
    if scheme is None or url == scheme:
        raise SpecError(
            "expected an Optuna storage URL starting with one of "
            f"{', '.join(STORAGE_SCHEMES)}, or null", file=file, field=field,
            value=_redact(url),
            hint="omit it for the journal file in the run folder; "
                 "e.g. postgresql://user@host/db on a cluster")
    if scheme not in ("sqlite:///", "journal://") and has_password(url):
        raise SpecError(
            "a password in the storage URL is refused: a URL shows in process lists, shell "
            "history and the sweep file", file=file, field=field, value=mask_url(url),
            hint=f"write the URL without it (postgresql://USER@HOST:PORT/DB) and give the "
                 f"password through ${PASSWORD_ENV} or --storage-password-file")
    if scheme == "postgresql://":
        return "postgresql+psycopg2://" + url[len(scheme):]
    return str(url)


_PASSWORD_KEYS = ("password", "passwd", "pwd")
#: ``host:port/path`` before an '@' of the path or query: no user part at all.
_HOST_PORT = re.compile(r"^[^:/?#@]*:\d*[/?#]")


def has_password(url: str) -> bool:
    """Whether ``url`` holds a password: in its user part or as a query parameter.

    Example:
        >>> has_password("postgresql://u:p/w@db/x"), has_password("postgresql://u@db:5/x")
        (True, False)
    """
    rest = url.split("://", 1)[-1]
    if "@" in rest:
        user = rest.split("@", 1)[0]  # a password may hold '/', ':' or '@' unescaped
        if ":" in user and not _HOST_PORT.match(user):
            return True
    query = rest.split("?", 1)[1] if "?" in rest else ""
    keys = {key.strip().lower() for key, _ in parse_qsl(query, keep_blank_values=True)}
    return bool(keys & set(_PASSWORD_KEYS))


# The user part's password, whatever it holds (up to the last '@' on the line, outside
# quotes), and password query parameters: masking too much is safe, too little is not.
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s'\"]*:)[^'\"\n]*@")
_PASSWORD_PARAM = re.compile(rf"([?&;](?:{'|'.join(_PASSWORD_KEYS)})=)[^&;'\"#\n]*",
                             re.IGNORECASE)


def mask_url(text: str) -> str:
    """``text`` with the password of every storage URL in it masked.

    Used for every log line, error, stored attribute and run-folder file that may hold a
    storage URL. Masks ``scheme://user:PASSWORD@host`` whatever the password holds (spaces,
    ``/``, ``@``, ``%``) and ``password=`` query parameters.

    Example:
        >>> mask_url("postgresql://sweeper:s3cret@db:5432/studies")
        'postgresql://sweeper:***@db:5432/studies'
    """
    return _PASSWORD_PARAM.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", text))


#: The environment variable the command line takes the storage password from (then removes it
#: from its own environment, so that a Ray it starts, and its workers, never inherit it).
PASSWORD_ENV = "CLONESWEEP_STORAGE_PASSWORD"
_USER_NO_PASSWORD = re.compile(r"^([a-z0-9+]+://)([^:/@\s]+)@(.+)$")


def with_password(url: str, password: str | None, *, source: str) -> str:
    """``url`` with ``password`` filled in: for a database URL with a user and no password.

    File storages (``sqlite:///``, ``journal://``) take no password: ``url`` comes back
    unchanged, as it does when ``password`` is None or empty. ``source`` names where the
    password came from, for the error messages (which never show it).

    Example:
        >>> mask_url(with_password("postgresql://sweeper@db/optuna", "pw", source="env"))
        'postgresql://sweeper:***@db/optuna'
    """
    if not password or url.startswith(("sqlite:///", "journal://")):
        return url
    match = _USER_NO_PASSWORD.match(url)
    if match is None:
        raise SpecError(
            "the storage URL already holds a password" if has_password(url)
            else "the storage URL names no user to give the password to",
            field="storage", value=mask_url(url),
            hint=f"a password comes from {source}: write the URL as "
                 "postgresql+psycopg2://USER@HOST:PORT/DB, without a password")
    scheme, user, rest = match.groups()
    return f"{scheme}{user}:{quote(password, safe='')}@{rest}"


def read_password_file(path: str | Path) -> str:
    """The password in ``path``: its content without the trailing newline (a mounted secret).

    Raises:
        SpecError: The file cannot be read or is empty.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read the storage password file: {exc.strerror}", file=str(path),
                        hint="point --storage-password-file at a readable file "
                             "(e.g. a mounted Kubernetes secret)") from exc
    password = text.rstrip("\r\n")
    if not password:
        raise SpecError("the storage password file is empty", file=str(path))
    return password


def _redact(value: Any) -> Any:
    """Hide a password in a URL before it is echoed in an error message."""
    return mask_url(value) if isinstance(value, str) else value


def _resources(block: Block) -> ResourcesSpec:
    block.only(("cpu", "gpu"))
    defaults = ResourcesSpec()
    cpu = block.number("cpu", defaults.cpu, positive=True)
    gpu = block.number("gpu", defaults.gpu, low=0)
    if gpu > 1 and not float(gpu).is_integer():
        block.fail("gpu", "a share above one GPU must be a whole number of GPUs", gpu,
                   "use a fraction <= 1 (e.g. 0.25) or an integer")
    return ResourcesSpec(cpu=float(cpu), gpu=float(gpu))


def _timeout(block: Block) -> float | None:
    value = block.number("trial_timeout", None, positive=True, nullable=True)
    return None if value is None else float(value)
