"""The ``clonesweep`` command: parse -> spec -> orchestrator; progress and tables.

Exit codes: 0 the command did its job; 1 the sweep failed (or storage could not be opened);
2 bad input (the sweep file, a model config, a flag); 130 interrupted.

About 380 lines, past the usual 300: the argument parser of every command and the
dispatch to them; each command's work is in its own module (cli/ and orchestrator/commands/),
so what stays here is the one place that lists every flag.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from clonesweep.errors import CloneSweepError, SpecError
from clonesweep.spec import load_sweep
from clonesweep.spec.model import SweepSpec

__all__ = ["main"]


def _positive(flag: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {text!r}")
        return value
    return parse


# Commands beyond run/status/best live in their own modules, each with
# ``add_parser(subparsers)`` returning the parser (or a list of parsers) it added, whose
# first positional is the sweep ``file``, and ``handle(spec, args) -> int`` (the exit code).
_COMMAND_MODULES: tuple[str, ...] = ("clonesweep.cli.inspect", "clonesweep.cli.ensemble",
                                     "clonesweep.cli.validate")


# --- ux: what `clonesweep --help` shows users (the module docstring is for developers) ---
_DESCRIPTION = """\
Hyperparameter sweeps and seeded ensembles of Keras 3 models: trials run on Ray workers
(a local Ray by default), every trial is recorded in an Optuna study.

Start with `clonesweep validate FILE` (a dry run that creates nothing), then
`clonesweep run FILE`. Each command has its own help: `clonesweep run --help`."""

_EPILOG = """\
exit codes: 0 done, 1 the sweep failed, 2 bad input (the message names the file, field and
value), 130 interrupted (`clonesweep resume FILE` goes on).
docs: README.md, docs/sweep-file.md, docs/api.md, docs/json-events.md"""


def _version() -> str:
    from clonesweep import __version__

    return f"clonesweep {__version__}"
# --- end ux ---


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clonesweep", description=_DESCRIPTION, epilog=_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=_version())  # ux
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        module = importlib.import_module(module_name)
        added = module.add_parser(sub)
        for parser in added if isinstance(added, list) else [added]:
            parser.set_defaults(handler=module.handle)
    run = sub.add_parser("run", help="run a sweep to its budget of finished trials")
    _run_flags(run)
    run.add_argument("--resume", action="store_true",
                     help="continue an existing sweep (an error if its study does not exist)")
    resume = sub.add_parser("resume", help="continue a sweep after a crash or an interrupt "
                                           "(run --resume)")
    _run_flags(resume)
    resume.set_defaults(resume=True)
    for name, text in (("status", "counts of the sweep's trials"),
                       ("best", "the best trial so far")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("file", help="the sweep file (YAML)")
        cmd.add_argument("--storage", help="an Optuna storage URL (overrides sweep.storage)")
        _password_flag(cmd)
        cmd.add_argument("--json", action="store_true", help="print JSON")
    for cmd in sub.choices.values():  # ux: every command can show the libraries' banners
        cmd.add_argument("--verbose", action="store_true",
                         help="show Ray's and TensorFlow's own start-up messages and logs")
    # Every command that opens a storage (those of _COMMAND_MODULES too) takes the password
    # file, and a project storage.
    for cmd in sub.choices.values():
        flags = cmd._option_string_actions
        if "--storage" in flags and "--storage-password-file" not in flags:
            _password_flag(cmd)
        if "--storage" in flags and "--project" not in flags:
            cmd.add_argument("--project", metavar="PATH",
                             help="a project storage holding many sweeps, each the study of "
                                  "its name (a SQLite file or a database URL; default "
                                  "$CLONESWEEP_PROJECT); overrides sweep.storage/project")
    return p


def _run_flags(run: argparse.ArgumentParser) -> None:
    """The flags of ``run`` and ``resume``."""
    run.set_defaults(handler=_run)
    run.add_argument("file", help="the sweep file (YAML)")
    run.add_argument("--trials", type=_positive("--trials"), help="override sweep.trials")
    run.add_argument("--parallel", type=_positive("--parallel"), help="override sweep.parallel")
    run.add_argument("--storage", help="an Optuna storage URL (overrides sweep.storage)")
    _password_flag(run)
    run.add_argument("--address", default=None,
                     help="a Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    run.add_argument("--backend", choices=("ray", "inprocess"), default="ray",
                     help="where trials run (inprocess: one at a time in this process)")
    run.add_argument("--json", action="store_true",
                     help="stream JSON lines on stdout, one per event (docs/json-events.md); "
                          "the human view goes to stderr")
    run.add_argument("--enqueue-from", metavar="STUDY", default=None,
                     help="warm start: enqueue the best trials of study STUDY (in this "
                          "sweep's storage) before sampling; overrides sweep.enqueue_from")
    run.add_argument("--add-trials", type=_positive("--add-trials"), default=0, metavar="N",
                     help="run N more trials than the study has finished (on a sweep cut "
                          "short: than the budget it holds)")
    run.add_argument("--takeover", action="store_true",
                     help="run even if another driver's lease on the sweep is fresh (that "
                          "driver stops at its next heartbeat)")
    run.add_argument("--grace", type=float, default=30.0, metavar="S",
                     help="after Ctrl-C / SIGTERM, seconds running trials may take to finish "
                          "before they are cancelled and re-queued (default 30; a second "
                          "Ctrl-C cancels at once)")


def _password_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage-password-file", metavar="PATH",
        help="read the storage password from this file (else $CLONESWEEP_STORAGE_PASSWORD); "
             "the storage URL then names the user only")


def _password(args: argparse.Namespace, env_password: str | None) -> tuple[str | None, str]:
    """The storage password (from --storage-password-file, else the environment) and where
    it came from."""
    from clonesweep.spec.settings import PASSWORD_ENV, read_password_file

    path = getattr(args, "storage_password_file", None)
    return ((read_password_file(path), "--storage-password-file") if path
            else (env_password, f"${PASSWORD_ENV}"))


def _with_password(spec: SweepSpec, args: argparse.Namespace, password: str | None,
                   source: str) -> SweepSpec:
    """Fill the storage URL's password from --storage-password-file or the environment.

    The password reaches the driver's storage URL only: never a command line, the run
    folder (which shows URLs masked) or a worker (the WorkerJob holds no storage URL).
    """
    from clonesweep.spec.settings import with_password

    path = getattr(args, "storage_password_file", None)
    url = spec.sweep.storage
    if path and (url is None or url.startswith(("sqlite:///", "journal://"))):
        from clonesweep.errors import SpecError

        raise SpecError("--storage-password-file is for a database storage, but the sweep's "
                        "storage is a file", field="--storage-password-file", value=path,
                        hint="give --storage postgresql+psycopg2://USER@HOST/DB, or drop the "
                             "flag")
    if not password or url is None:
        return spec
    return dataclasses.replace(spec, sweep=dataclasses.replace(
        spec.sweep, storage=with_password(url, password, source=source)))


def _with_project(spec: SweepSpec, args: argparse.Namespace,
                  env_project: str | None) -> SweepSpec:
    """``--project``, else ``$CLONESWEEP_PROJECT`` when the file names no storage or project,
    as the sweep's storage."""
    from pathlib import Path

    from clonesweep.spec.settings import PROJECT_ENV, with_project

    flag = getattr(args, "project", None)
    if flag and getattr(args, "storage", None):
        raise SpecError("give --storage or --project, not both", field="--project",
                        value=flag, hint="a project is a storage shared by many sweeps")
    if flag:
        return dataclasses.replace(spec, sweep=with_project(
            spec.sweep, flag, Path.cwd(), file="--project", field="--project"))
    if env_project and spec.sweep.storage is None and not getattr(args, "storage", None):
        return dataclasses.replace(spec, sweep=with_project(
            spec.sweep, env_project, Path.cwd(), file=f"${PROJECT_ENV}", field=PROJECT_ENV))
    return spec


def _with_overrides(spec: SweepSpec, args: argparse.Namespace) -> SweepSpec:
    changes: dict[str, Any] = {}
    for key in ("trials", "parallel", "storage"):
        value = getattr(args, key, None)
        if value is not None:
            changes[key] = value
    if "storage" in changes:
        from clonesweep.spec.loader import check_storage_url

        changes["storage"] = check_storage_url(changes["storage"], file="--storage",
                                               field="--storage")
    if getattr(args, "enqueue_from", None):
        from clonesweep.spec.model import EnqueueFrom

        changes["enqueue_from"] = EnqueueFrom(args.enqueue_from)
    return dataclasses.replace(spec, sweep=dataclasses.replace(spec.sweep, **changes))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # a factory may import Keras here
    # Read once, then removed: a local Ray started below (and its workers) must not inherit it.
    env_password = os.environ.pop("CLONESWEEP_STORAGE_PASSWORD", None)
    env_project = os.environ.get("CLONESWEEP_PROJECT") or None
    args = _parser().parse_args(argv)
    if not args.verbose:  # ux
        from clonesweep.cli.quiet import quiet_logs

        quiet_logs()
    password: str | None = env_password
    try:
        password, source = _password(args, env_password)
        spec = _with_password(_with_project(_with_overrides(load_sweep(args.file), args),
                                            args, env_project), args, password, source)
        if args.command not in ("run", "resume"):  # those check the lease first
            _import_keras_first(spec, args)
        handler = getattr(args, "handler", None) or (_run if args.command == "run" else _report)
        code: int = handler(spec, args)
        return code
    except SpecError as exc:
        print(f"clonesweep: error: {_redacted(str(exc), password)}", file=sys.stderr)
        return 2
    except CloneSweepError as exc:
        print(f"clonesweep: error: {_redacted(str(exc), password)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("clonesweep: interrupted; trials still running were failed as 'interrupted' "
              "and re-queued: `clonesweep resume FILE` continues", file=sys.stderr)
        return 130


def _redacted(text: str, password: str | None) -> str:
    """``text`` with storage URLs masked and the password gone in any spelling (as given,
    percent-encoded): a driver's or server's message may quote it."""
    from urllib.parse import quote, quote_plus

    from clonesweep.spec.settings import mask_url

    text = mask_url(text)
    if password:
        for form in sorted({password, quote(password, safe=""), quote_plus(password)},
                           key=len, reverse=True):
            text = text.replace(form, "***")
    return text


# --- ux: commands that import Keras on the driver import it first, without its banner ---
# (ensemble does so itself, after the checks that need no Keras.)
_KERAS_COMMANDS = ("validate", "repro")


def _import_keras_first(spec: SweepSpec, args: argparse.Namespace) -> None:
    if args.command == "repro":
        _backend_of_trial(spec, args.trial)
    # run and resume rebuild the model at the corners before anything exists (validate's
    # checks), so they import Keras on the driver whatever the backend.
    needs = args.command in (*_KERAS_COMMANDS, "run", "resume")
    if needs and not args.verbose:
        from clonesweep.cli.quiet import import_keras_quietly

        import_keras_quietly()


def _views(spec: SweepSpec, args: argparse.Namespace) -> Any:
    """The live view on a terminal (plain lines when piped); with --json, the JSON lines on
    stdout and the human view on stderr; with sweep.tensorboard, TensorBoard logs too."""
    from clonesweep.cli.events import FanOut, JsonLinesProgress
    from clonesweep.cli.progress import make_progress

    views: list[Any] = ([JsonLinesProgress(sys.stdout), make_progress(sys.stderr)] if args.json
                        else [make_progress(sys.stdout)])
    if spec.sweep.tensorboard:
        from clonesweep.orchestrator.tensorboard import TensorBoardLogs

        views.append(TensorBoardLogs(spec))
    return FanOut(*views)
# --- end ux ---


def _run(spec: SweepSpec, args: argparse.Namespace) -> int:
    from clonesweep.orchestrator import base_model_config, run_sweep
    from clonesweep.orchestrator.backends.base import Backend, InProcessBackend

    # validate's checks, and its --data checks, before anything exists: no run folder, no
    # study, no Ray (SpecError: exit 2). A resumed study is checked against the sweep too;
    # first, a read of its lease, so a second driver is told at once that one runs.
    from clonesweep.orchestrator.commands.validate import check_storage, validate_sweep
    from clonesweep.orchestrator.study.storage import storage_url

    field = ("--storage" if args.storage else "--project" if args.project
             else "sweep.project" if spec.sweep.project else "sweep.storage")
    found = check_storage(spec, storage_url(spec), field if spec.sweep.storage else
                          "sweep.run_dir")
    if not args.takeover and found.startswith("resumes"):
        from clonesweep.orchestrator.study.lease import refuse_if_held
        from clonesweep.orchestrator.study.storage import load_study

        refuse_if_held(load_study(spec.name, storage_url(spec)))
    # After the lease: a second driver is refused before Keras's import (seconds).
    _import_keras_first(spec, args)
    # The loader's arrays, checked, go to the workers: it is not called again on the driver.
    spec = validate_sweep(spec, data=True, storage_field=field).with_data(spec)
    if args.resume:
        from clonesweep.orchestrator.study.storage import load_study, storage_url

        load_study(spec.name, storage_url(spec))  # StudyError: nothing to resume
    base_config = base_model_config(spec)
    from clonesweep.orchestrator.packing import resolve_packing

    spec = resolve_packing(spec, base_config, can_pack=args.backend != "inprocess",
                           trials=args.trials)
    backend: Backend
    if args.backend == "inprocess":
        backend = InProcessBackend()
    else:
        from clonesweep.orchestrator.backends.ray.backend import RayBackend
        from clonesweep.orchestrator.packing import worker_keras_backend

        backend = RayBackend(address=args.address, resources=spec.sweep.resources,
                             trial_timeout=spec.sweep.trial_timeout,
                             resource_wait=spec.sweep.resource_wait,
                             keras_backend=worker_keras_backend(spec))
    from clonesweep.orchestrator.sweep import RunOptions

    options = RunOptions(takeover=args.takeover, add_trials=args.add_trials, grace=args.grace,
                         trials=args.trials, resume=bool(args.resume))
    views = _views(spec, args)  # ux: built before the redirect: JSON lines reach stdout
    # Ray prints what the cluster tells the driver (a node lost, with its raylet's last log
    # lines) on stdout: into the run folder's ray.log instead, not the table or the JSON.
    # Anything else printed on stdout during the run goes to stderr with --json.
    quiet: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if args.backend != "inprocess":
        from clonesweep.orchestrator.backends.ray.output import RAY_LOG, ray_messages_to

        quiet = ray_messages_to(spec.run_folder / RAY_LOG)
    try:
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext(), \
                quiet:
            outcome = run_sweep(spec, base_config, backend, views, options)
    finally:
        views.close()
    c = outcome.counts
    # Failed only when this run finished trials and every one of them failed.
    return 1 if c.finished > 0 and c.complete + c.pruned == 0 else 0


def _report(spec: SweepSpec, args: argparse.Namespace) -> int:
    from clonesweep.orchestrator.commands.report import best_payload, status_payload

    payload = status_payload(spec) if args.command == "status" else best_payload(spec)
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        _print_payload(payload, sys.stdout)
    return 0 if args.command == "status" or payload.get("best") else 1


def _print_payload(payload: dict[str, Any], out: TextIO, indent: str = "") -> None:
    for key, value in payload.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:", file=out)
            _print_payload(value, out, indent + "  ")
        else:
            print(f"{indent}{key}: {value}", file=out)


def _backend_of_trial(spec: SweepSpec, number: int) -> None:
    """Retrain a trial on the Keras backend it trained on (its recorded environment), unless
    ``KERAS_BACKEND`` is set or Keras is already imported; the study and trial are looked up
    again, with their errors, by the command itself."""
    if os.environ.get("KERAS_BACKEND") or "keras" in sys.modules:
        return
    from clonesweep.orchestrator.commands.report import open_study_of
    from clonesweep.orchestrator.commands.repro import recorded_backend

    try:
        backend = recorded_backend(open_study_of(spec), number)
    except CloneSweepError:
        return  # no study yet: the command says so
    if backend:
        os.environ["KERAS_BACKEND"] = backend
