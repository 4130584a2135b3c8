"""Run one tool of the real-model reference sweeps, timed alike, and record its JSON line.

    python bench/anchors_models/run_tool.py TOOL --model cnn [--trials N --epochs E]
        [--round R] [--results bench/results.jsonl] [-- EXTRA ARGS FOR THE TOOL]

TOOL: ``floor``, ``raytune``, ``optuna`` (the scripts of this folder) or ``clonesweep-tf``,
``clonesweep-jax``, ``clonesweep-packed`` (bench/clonesweep_models.py; extra args such as
``--jax-cache DIR`` pass through). Every command is timed from its start to its exit
(timing.py): for the scripts here ``wall_s`` is replaced by that figure (the script's own,
taken when it printed, is kept as ``wall_at_print_s``) and ``overhead_s`` recomputed from
it; clonesweep_models.py already times ``clonesweep run`` that way. Appends ``{"label":
"models", "round": R, ...}`` to the results file and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

import models
from timing import timed

HERE = Path(__file__).resolve().parent
SCRIPTS = {"floor": "floor.py", "raytune": "raytune.py", "optuna": "optuna_threads.py"}
TOOLS = [*SCRIPTS, "clonesweep-tf", "clonesweep-jax", "clonesweep-packed"]


def command(tool: str, args: argparse.Namespace, extra: list[str]) -> list[str]:
    common = ["--model", args.model, "--trials", str(args.trials), "--epochs", str(args.epochs)]
    if tool in SCRIPTS:
        return [sys.executable, str(HERE / SCRIPTS[tool]), *common, *extra]
    backend = "jax" if tool == "clonesweep-jax" else "tensorflow"
    pack = ["--pack", str(args.pack)] if tool == "clonesweep-packed" else []
    return [sys.executable, str(HERE.parent / "clonesweep_models.py"), *common,
            "--keras-backend", backend, *pack, *extra]


def measure(tool: str, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    done = timed(command(tool, args, extra), stderr=args.stderr)
    found = [line for line in done.lines if line.startswith("{")]
    out: dict[str, Any] = json.loads(found[-1]) if found else {"tool": tool}
    if tool in SCRIPTS and "fit_eval_sum_s" in out:
        out["wall_at_print_s"] = out["wall_s"]
        out["wall_s"] = round(done.wall_s, 3)
        out["overhead_s"] = round(done.wall_s - out["fit_eval_sum_s"] / out["parallel"], 3)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"label": "models", "when": when, "round": args.round, "tool": tool, "rc": done.rc,
            "load_start": round(load, 2), **{k: v for k, v in out.items() if k != "tool"}}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = models.arguments(__doc__.splitlines()[0])
    parser.add_argument("tool", choices=TOOLS)
    parser.add_argument("--round", type=int, default=0)
    parser.add_argument("--pack", type=int, default=8,
                        help="clonesweep-packed: the most trials per packed group")
    parser.add_argument("--results", type=Path, default=None,
                        help="append the line to this file (default: print only)")
    parser.add_argument("--stderr", type=Path, default=None,
                        help="keep the tool's stderr in this file (default: discarded)")
    args = parser.parse_args(argv)
    record = measure(args.tool, args, extra)
    text = json.dumps(record)
    print(text, flush=True)
    if args.results is not None:
        with open(args.results, "a") as out:
            out.write(text + "\n")
    if record["rc"] != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
