"""``clonesweep ensemble FILE --members N``: train seeded clones, score and export them.

Exit codes: 0 the ensemble holds every member asked for; 1 it holds fewer (it is still
scored and written, and says so) or none; 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from clonesweep.spec.model import SweepSpec

__all__ = ["add_parser", "handle"]


def _positive(flag: str) -> Any:
    def parse(text: str) -> int:
        value = int(text) if text.lstrip("-").isdigit() else 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {text!r}")
        return value
    return parse


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("ensemble", help="train N independently seeded clones and score them")
    p.add_argument("file", help="the sweep file (YAML)")
    p.add_argument("--members", type=_positive("--members"), required=True,
                   help="how many members")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--from-best", action="store_true",
                        help="use the params of the sweep's best trial")
    source.add_argument("--trial", type=int, help="use the params of this trial of the sweep")
    p.add_argument("--fused", action="store_true",
                   help="train members as one stacked model per worker where the config "
                        "allows it (docs/ensembles.md)")
    p.add_argument("--seed", type=int, help="the ensemble seed (default: sweep.seed)")
    p.add_argument("--study", help="the ensemble study's name (default: <name>-ensemble)")
    p.add_argument("--parallel", type=_positive("--parallel"), help="override sweep.parallel")
    p.add_argument("--storage", help="an Optuna storage URL (overrides sweep.storage)")
    p.add_argument("--address", default=None,
                   help="a Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--backend", choices=("ray", "inprocess"), default="ray",
                   help="where members run (inprocess: one at a time in this process)")
    p.add_argument("--json", action="store_true", help="print ensemble.json on stdout")
    return p


def handle(spec: SweepSpec, args: argparse.Namespace) -> int:
    from clonesweep.orchestrator.ensemble.export import finish
    from clonesweep.orchestrator.ensemble.run import (
        EnsembleRequest,
        check_study_unused,
        resolve_params,
        run_ensemble,
    )
    from clonesweep.orchestrator.model import base_model_config

    out: TextIO = sys.stderr if args.json else sys.stdout
    request = EnsembleRequest(members=args.members, seed=args.seed, fused=args.fused,
                              study=args.study,
                              trial="best" if args.from_best else args.trial)
    # Where the params come from, and whether the ensemble study is free, are known before
    # any worker starts: a wrong --trial or a used --study is refused at once.
    study = request.study or f"{spec.name}-ensemble"
    _, source = resolve_params(spec, request.trial)
    check_study_unused(spec, study)
    if not args.verbose:  # scoring imports Keras here: without TensorFlow's start-up lines
        from clonesweep.cli.quiet import import_keras_quietly

        import_keras_quietly()
    # run's checks (validate --data's) before any worker starts: the rebuild at the corners,
    # the training names, the places, one call of the data loader, whose checked arrays the
    # members then get (it is not called again here).
    from clonesweep.orchestrator.commands.validate import validate_sweep

    spec = validate_sweep(spec, data=True,
                          storage_field="--storage" if args.storage else "sweep.storage"
                          ).with_data(spec)
    base_config = base_model_config(spec)
    print(f"ensemble of {args.members} members of {spec.name}"
          f"{' (fused)' if args.fused else ''}; params from {source}; members are the "
          f"trials of study {study!r}", file=out, flush=True)
    outcome = run_ensemble(spec, base_config, _backend(spec, args), request,
                           on_member=lambda m, retried: _member_line(m, retried, out))
    if outcome.fused_note:
        print(outcome.fused_note, file=out)
    report = finish(spec, outcome)
    _print_report(report, outcome, out)
    if args.json:
        print(json.dumps(report.payload, indent=2, default=str))
    return 0 if report.complete else 1


def _backend(spec: SweepSpec, args: argparse.Namespace) -> Any:
    if args.backend == "inprocess":
        from clonesweep.orchestrator.backends.base import InProcessBackend

        return InProcessBackend()
    from clonesweep.orchestrator.backends.ray.backend import RayBackend

    return RayBackend(address=args.address, resources=spec.sweep.resources,
                      trial_timeout=spec.sweep.trial_timeout,
                      resource_wait=spec.sweep.resource_wait)


def _member_line(member: Any, retried: bool, out: TextIO) -> None:
    r = member.result
    # "member i" and its seed; the ensemble study's trial number is not the sweep trial the
    # params came from (the header names that one), so it is labelled as the member's own.
    if retried or r is None:
        print(f"  member {member.index:>2}: retry (attempt {member.spec.attempt})",
              file=out, flush=True)
        return
    state = r.state.value + (f":{r.reason.value}" if r.reason else "")
    value = "" if r.value is None else f"{r.value:.4f}"
    how = "fused" if member.output is not None and member.output.fused else "separate"
    print(f"  member {member.index:>2} (seed {member.spec.seed}, ensemble trial "
          f"#{member.number}): {state} {value} [{how}] train {r.timings.train_s:.1f}s",
          file=out, flush=True)


def _print_report(report: Any, outcome: Any, out: TextIO) -> None:
    held = f"{report.held} of {report.asked} members"
    if not report.complete:
        held += " -- FEWER THAN ASKED: the ensemble below averages only these"
    print(f"ensemble holds {held}; params from {outcome.source}; "
          f"{outcome.wall_s:.1f}s", file=out)
    print(f"{'metric':<14}{'ensemble':>10}{'mean':>10}{'std':>10}{'min':>10}{'max':>10}",
          file=out)
    for row in report.rows:
        print(f"{row.metric:<14}{row.ensemble:>10.4f}{row.mean:>10.4f}{row.std:>10.4f}"
              f"{row.min:>10.4f}{row.max:>10.4f}", file=out)
    print(f"members: {report.folder / 'members'}", file=out)
    print(f"averaged model: {report.averaged}", file=out)
    print(f"manifest: {report.folder / 'manifest.json'}", file=out)
