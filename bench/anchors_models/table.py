"""The Markdown table of the real-model reference sweeps, from bench/results.jsonl.

    python bench/anchors_models/table.py [--results FILE] [--since 2026-12-07T00:00]
        [--trials 16 --epochs 5]

One table per model; one row per tool with each run's figures (``a / b``) and the ratio of
their medians to Ray Tune's, against issue #23's targets: wall <= 0.7x Ray Tune's, overhead
<= 0.5x, first epoch <= 0.5x. Columns (models.py's docstring defines them):

- wall: the command's start to its exit;
- fit+eval: the trials' own training and validation seconds, summed;
- overhead: wall - fit+eval / 2 (the floor: / 1);
- above floor: wall - the floor's fit+eval / 2 (the floor's median for that model): what a
  tool costs above two perfectly fed workers training like the floor;
- first epoch: the command's start to the first trial's first epoch end.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ORDER = ["floor", "clonesweep-tf", "clonesweep-jax", "clonesweep-jax (warm)",
         "clonesweep-packed", "raytune", "optuna"]
TARGETS = {"wall_s": 0.7, "overhead_s": 0.5, "first_epoch_s": 0.5}


def rows(path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    found = []
    for text in path.read_text().splitlines():
        if not text.startswith("{"):
            continue
        row = json.loads(text)
        if (row.get("label") != "models" or row.get("rc") != 0
                or row.get("trials") != args.trials or row.get("epochs") != args.epochs
                or row.get("when", "") < args.since):
            continue
        if row["tool"] == "clonesweep-jax" and row.get("jax_cache") == "warm":
            row["tool"] = "clonesweep-jax (warm)"
        found.append(row)
    return found


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def cell(runs: list[dict[str, Any]], key: str) -> str:
    values = [r.get(key) for r in runs]
    return " / ".join("-" if v is None else f"{v:.1f}" for v in values)


def ratio(value: float | None, anchor: float | None, target: float | None) -> str:
    if value is None or not anchor:
        return "-"
    text = f"{value / anchor:.2f}x"
    if target is None:
        return text
    return f"**{text}**" if value / anchor <= target else f"{text} (missed)"


def table(model: str, found: list[dict[str, Any]]) -> list[str]:
    by_tool = {t: [r for r in found if r["model"] == model and r["tool"] == t] for t in ORDER}
    ray = by_tool["raytune"]
    floor = median(by_tool["floor"], "fit_eval_sum_s")
    out = [f"### {model}", "",
           "| tool | runs | wall s | vs Ray Tune | fit+eval s | overhead s | vs Ray Tune "
           "| above floor s | first epoch s | vs Ray Tune | best val_acc |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for tool, runs in by_tool.items():
        if not runs:
            continue
        judged = tool.startswith("clonesweep")  # the rows the targets are for
        above = ("-" if floor is None or tool == "floor" else
                 " / ".join(f"{r['wall_s'] - floor / 2:.1f}" for r in runs))
        out.append("| " + " | ".join([
            tool, str(len(runs)), cell(runs, "wall_s"),
            ratio(median(runs, "wall_s"), median(ray, "wall_s"),
                  TARGETS["wall_s"] if judged else None),
            cell(runs, "fit_eval_sum_s"), cell(runs, "overhead_s"),
            ratio(median(runs, "overhead_s"), median(ray, "overhead_s"),
                  TARGETS["overhead_s"] if judged else None),
            above, cell(runs, "first_epoch_s"),
            ratio(median(runs, "first_epoch_s"), median(ray, "first_epoch_s"),
                  TARGETS["first_epoch_s"] if judged else None),
            " / ".join(str(r.get("best_val_accuracy")) for r in runs),
        ]) + " |")
    loads = [r["load_start"] for r in found if r["model"] == model and "load_start" in r]
    if loads:
        out += ["", f"1-minute load at each run's start: {min(loads):.1f}-{max(loads):.1f}."]
    return [*out, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE.parent / "results.jsonl")
    parser.add_argument("--since", default="", help="only runs at or after this UTC time")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    found = rows(args.results, args)
    if not found:
        raise SystemExit(f"no runs of the benchmark in {args.results} "
                         f"({args.trials} trials, {args.epochs} epochs, since {args.since!r})")
    for model in sorted({r["model"] for r in found}):
        print("\n".join(table(model, found)))


if __name__ == "__main__":
    main()
