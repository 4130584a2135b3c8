"""Scale by simulation: how many workers one clonesweep driver keeps busy.

    python bench/scale.py                          # 8, 32 and 128 slots, 1,500 trials each
    python bench/scale.py --slots 8 32 --trials 1000
    python bench/scale.py --slots 32 --samplers random tpe --history 2000

One machine poses as a large cluster: ``ray.init(num_cpus=<slots>)`` gives that many logical
CPUs, and each slot runs :class:`dispatch.TrivialWorker` (a COMPLETE result at once, no Keras),
so the real sweep loop, Ray backend and group-commit journal do all the work there is. Each case
runs in a fresh process (``bench/dispatch.py --case clonesweep:journal:<sampler>``), per
sampler; ``--history N`` pre-fills the study with N finished trials (TPE's cost per ask grows
with the history, so a TPE figure holds for that history).

Per case: trials/s (from the 200th finished trial to the last), the driver's CPU ms per trial
(the driver process's CPU time, its Ray threads included) and RSS, and the average RSS of one
idle worker process. Then, for trials of 10 s, 60 s and 600 s, the workers one driver keeps
busy: trial length / the driver's per-trial cost, from its CPU cost at 128 slots (a driver with
a core of its own) and, as a check, trial length x the trials/s measured at 128 slots (this
2-core machine's driver shares its cores with the 128 workers and Ray itself).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dispatch import _child

LENGTHS_S = (10, 60, 600)


def _available_gib() -> float:
    with open("/proc/meminfo") as fh:
        fields = dict(line.split(":", 1) for line in fh)
    return int(fields["MemAvailable"].split()[0]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--trials", type=int, default=1500)
    parser.add_argument("--samplers", nargs="+", default=["random"], choices=["random", "tpe"])
    parser.add_argument("--history", type=int, default=0,
                        help="finished trials in the study before each case")
    parser.add_argument("--gib-per-worker", type=float, default=0.15,
                        help="memory to require per worker before starting a case")
    args = parser.parse_args()
    report: dict[str, object] = {}
    for sampler in args.samplers:
        report[sampler] = _cases(args, sampler)
    print(json.dumps(report))


def _cases(args: argparse.Namespace, sampler: str) -> dict[str, object]:
    rows = []
    for slots in args.slots:
        free = _available_gib()
        need = slots * args.gib_per_worker + 2.0
        if free < need:
            print(f"skipping {slots} slots: {free:.1f} GiB available, want {need:.1f}")
            continue
        load = os.getloadavg()[0]
        row = _child(["--case", f"clonesweep:journal:{sampler}", "--trials", str(args.trials),
                      "--slots", str(slots), "--history", str(args.history)])
        row.update(load_at_start=round(load, 2), mem_available_gib=round(free, 1))
        rows.append(row)
        print(f"{slots} slots done: {row['trials_per_s']} trials/s (load {load:.2f})",
              flush=True)
    print(f"\n{args.trials} trivial trials, group-commit journal, {sampler} sampler, "
          f"{args.history} trials of history before")
    print(f"{'slots':>6}{'trials/s':>10}{'cpu ms/tr':>10}{'wall ms/tr':>11}"
          f"{'driver RSS MB':>14}{'worker RSS MB':>14}{'load':>6}")
    for r in rows:
        print(f"{r['slots']:>6}{r['trials_per_s']:>10}{r['driver_cpu_ms_per_trial']:>10}"
              f"{1000 / r['trials_per_s']:>11.2f}{r[f'rss_mb_at_{args.trials}']:>14}"
              f"{r['worker_rss_mb']:>14}{r['load_at_start']:>6}")
    report: dict[str, object] = {"cases": rows}
    if rows:
        top = rows[-1]
        cpu_s = top["driver_cpu_ms_per_trial"] / 1000
        rate = top["trials_per_s"]
        print(f"\nworkers one driver keeps busy (from the {top['slots']}-slot case)")
        print(f"{'trial s':>8}{'by CPU cost':>13}{'by measured trials/s':>22}")
        busy = {}
        for length in LENGTHS_S:
            by_cpu, by_rate = int(length / cpu_s), int(length * rate)
            busy[str(length)] = {"by_cpu_cost": by_cpu, "by_measured_rate": by_rate}
            print(f"{length:>8}{by_cpu:>13}{by_rate:>22}")
        report["workers_kept_busy"] = busy
    return report


if __name__ == "__main__":
    main()
