#!/usr/bin/env bash
# The sweep benchmark, side by side in one run on one machine: clonesweep, Ray Tune +
# OptunaSearch (reuse_actors=True), Optuna with n_jobs=2 threads, and the floor (the 16
# trainings back to back in one warm process). Needs an otherwise idle machine and
# `pip install "ray[tune]"` besides clonesweep. Appends JSON lines to $RESULTS.
#
#   bash bench/sweep_vs_anchors.sh [REPEATS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
anchors=${ANCHORS:-$here/../../shared/anchors-bench}
repeats=${1:-1}
export RESULTS=${RESULTS:-$here/results.jsonl}
for _ in $(seq "$repeats"); do
    (cd "$anchors" && bash run_bench.sh limit python limit.py)
    bash "$anchors/run_bench.sh" clonesweep python "$here/clonesweep_sweep.py"
    (cd "$anchors" && bash run_bench.sh raytune python raytune_optuna.py --reuse-actors)
    (cd "$anchors" && bash run_bench.sh optuna python optuna_threads.py)
done
