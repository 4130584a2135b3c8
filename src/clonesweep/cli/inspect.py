"""Commands that look at a sweep after (or while) it runs: diff, repro, report, dashboard."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from clonesweep.spec.model import SweepSpec

__all__ = ["add_parser", "handle"]


def add_parser(sub: Any) -> list[argparse.ArgumentParser]:
    diff = sub.add_parser("diff", help="a trial's config against the base (or another trial)")
    diff.add_argument("file", help="the sweep file (YAML)")
    diff.add_argument("trial", type=int, help="trial number")
    diff.add_argument("other", type=int, nargs="?", help="compare with this trial instead")
    diff.add_argument("--seeds", action="store_true", help="show seed differences too")

    repro = sub.add_parser("repro", help="rebuild a trial from the study and check its hash")
    repro.add_argument("file", help="the sweep file (YAML)")
    repro.add_argument("trial", type=int, help="trial number")
    repro.add_argument("--train", action="store_true",
                       help="retrain it and compare history and value (bitwise on CPU)")
    repro.add_argument("--save", metavar="PATH",
                       help="retrain it (implies --train) and save the model there (.keras)")

    report = sub.add_parser("report", help="write a self-contained HTML page of the sweep")
    report.add_argument("file", help="the sweep file (YAML)")
    report.add_argument("--out", help="where to write it (default: <run folder>/report.html)")

    dash = sub.add_parser("dashboard", help="serve optuna-dashboard on the sweep's storage")
    dash.add_argument("file", help="the sweep file (YAML)")
    dash.add_argument("--host", default="127.0.0.1",
                      help="address to bind (default 127.0.0.1: this machine only)")
    dash.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parsers = [diff, repro, report, dash]
    for parser in parsers:
        parser.add_argument("--storage", help="an Optuna storage URL (overrides sweep.storage)")
        parser.add_argument("--json", action="store_true", help="print JSON")
    return parsers


def handle(spec: SweepSpec, args: argparse.Namespace) -> int:
    if args.command == "dashboard":
        return _dashboard(spec, args)
    from clonesweep.orchestrator.commands.report import open_study_of

    study = open_study_of(spec)
    if args.command == "diff":
        return _diff(spec, study, args)
    if args.command == "repro":
        return _repro(spec, study, args)
    return _report(spec, study, args)


def _diff(spec: SweepSpec, study: Any, args: argparse.Namespace) -> int:
    from clonesweep.orchestrator.commands.inspect import trial_diff

    changes = trial_diff(spec, study, args.trial, args.other, seeds=args.seeds)
    against = "base" if args.other is None else f"trial {args.other}"
    if args.json:
        print(json.dumps({"trial": args.trial, "against": against,
                          "changes": [{"path": c.path, "before": c.before, "after": c.after}
                                      for c in changes]}, indent=2, default=str))
        return 0
    print(f"trial {args.trial} against {against}: {len(changes)} change(s)")
    for c in changes:
        print(f"  {c.path}: {c.before!r} -> {c.after!r}")
    return 0


def _repro(spec: SweepSpec, study: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from clonesweep.orchestrator.commands.repro import reproduce

    save = Path(args.save) if args.save else None
    if save is not None and save.suffix != ".keras":
        from clonesweep.errors import SpecError

        raise SpecError("the model file must end in .keras", field="--save", value=args.save,
                        hint=f"e.g. --save {args.trial:05d}.keras")
    report = reproduce(spec, study, args.trial, train=args.train, save=save)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        print(f"trial {report.number}: config hash "
              f"{'matches' if report.hash_match else 'DIFFERS'} ({report.config_hash[:16]})")
        for key, (was, now) in report.environment_diff.items():
            print(f"  environment {key}: recorded {was}, here {now}")
        if report.trained:
            print(f"  retrained: {report.state} value={report.value} "
                  f"(recorded {report.stored_state} value={report.stored_value}); history "
                  f"{'identical' if report.history_match else 'DIFFERS'}; data "
                  f"{'identical' if report.data_match else 'DIFFERS'}")
        if report.saved:
            print(f"  model saved: {report.saved}")
        print("reproduced" if report.ok else "NOT reproduced")
    return 0 if report.ok else 1


def _report(spec: SweepSpec, study: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from clonesweep.orchestrator.commands.report_html import render_report
    from clonesweep.orchestrator.runfolder import write_atomic

    out = Path(args.out) if args.out else spec.run_folder / "report.html"
    write_atomic(out, render_report(spec, study).encode("utf-8"))
    if args.json:
        print(json.dumps({"report": str(out)}))
    else:
        print(f"report: {out}")
    return 0


def _dashboard(spec: SweepSpec, args: argparse.Namespace) -> int:
    from clonesweep.orchestrator.study.storage import dashboard_server, mask_url, storage_url

    serve = dashboard_server()  # SpecError if optuna-dashboard is missing
    url = storage_url(spec)
    where = f"http://{args.host}:{args.port}/"
    if args.json:
        print(json.dumps({"url": where, "storage": mask_url(url)}), flush=True)
    else:
        print(f"optuna-dashboard for {mask_url(url)} at {where} (Ctrl-C to stop)", flush=True)
    sys.stdout.flush()
    serve(url, args.host, args.port)
    return 0
