"""``clonesweep validate FILE``: the dry run of a sweep (see orchestrator/validate.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from clonesweep.spec.model import SweepSpec

__all__ = ["add_parser", "handle"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    cmd = sub.add_parser(
        "validate", help="dry run: check the sweep file, storage, code and every corner of "
                         "the search space; create nothing")
    cmd.add_argument("file", help="the sweep file (YAML)")
    cmd.add_argument("--storage", help="an Optuna storage URL (overrides sweep.storage)")
    cmd.add_argument("--data", action="store_true",
                     help="also call the data loader and check its arrays against the model")
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    parser: argparse.ArgumentParser = cmd
    return parser


def handle(spec: SweepSpec, args: argparse.Namespace) -> int:
    # Optuna's INFO lines are lowered by main (cli/quiet.py) unless --verbose.
    from clonesweep.orchestrator.commands.validate import validate_sweep

    field = "--storage" if args.storage else "sweep.storage"
    report = validate_sweep(spec, data=args.data, storage_field=field)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        _print(report, sys.stdout)
    return 0


def _print(report: Any, out: TextIO) -> None:
    print(f"{report.file}: OK, nothing created", file=out)
    print(f"  study   {report.name}: {report.study}", file=out)
    print(f"  storage {report.storage}", file=out)
    print(f"  sampler {report.sampler}, pruner {report.pruner}", file=out)
    print(f"  packing {report.packing}", file=out)
    if report.data is not None:
        shapes = ", ".join(f"{k} {v}" for k, v in report.data.items())
        print(f"  data    {shapes}", file=out)
    rows = [(c.label, f"{c.param_count:,}", _params(c.params)) for c in report.corners]
    widths = [max(len(r[i]) for r in [("corner", "params", ""), *rows]) for i in range(2)]
    print(f"  {'corner':<{widths[0]}}  {'params':>{widths[1]}}  values", file=out)
    for label, count, values in rows:
        print(f"  {label:<{widths[0]}}  {count:>{widths[1]}}  {values}", file=out)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items()) or "(base model)"
