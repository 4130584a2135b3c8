#!/usr/bin/env bash
# The real-model reference sweeps (issue #23, benchmark 1) side by side on one machine: for
# each model (the Conv2D+BatchNorm CNN and the small Transformer of configs/), the same 16
# fixed trials (5 epochs, batch 64, 2 at a time) run by the floor (back to back in one warm
# process), clonesweep on TensorFlow workers (the default), clonesweep on JAX workers (a fresh
# compilation cache: a first sweep), Ray Tune (OptunaSearch, reuse_actors) and Optuna threads
# (n_jobs=2), interleaved: each round runs every tool once per model, in the reverse order on
# odd rounds. Needs an otherwise idle machine and `pip install "ray[tune]"`. Appends one JSON
# line per run to $RESULTS (default bench/results.jsonl); the table:
# `python bench/anchors_models/table.py`.
#
#   bash bench/models_vs_anchors.sh [REPEATS] [MODELS]     # MODELS: "cnn transformer"
#   WARM=1 ...   also a warm JAX run after each cold one (the same cache folder, filled)
#   PACK=1 ...   also clonesweep with packed trials (training.pack, max_trials 8: JAX workers)
#   SMOKE=1 ...  2 trials, 1 epoch (checks the pieces; its numbers mean nothing)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repeats=${1:-1}
models=${2:-cnn transformer}
results=${RESULTS:-$here/results.jsonl}
size=()
[ "${SMOKE:-0}" = 1 ] && size=(--trials 2 --epochs 1)
tools=(floor clonesweep-tf clonesweep-jax raytune optuna)
[ "${PACK:-0}" = 1 ] && tools=(floor clonesweep-tf clonesweep-jax clonesweep-packed raytune optuna)
status=0
for r in $(seq 0 $((repeats - 1))); do
    order=("${tools[@]}")
    if [ $((r % 2)) = 1 ]; then
        order=(); for ((i = ${#tools[@]} - 1; i >= 0; i--)); do order+=("${tools[i]}"); done
    fi
    for model in $models; do
        for tool in "${order[@]}"; do
            run=(python "$here/anchors_models/run_tool.py" "$tool" --model "$model"
                 --round "$r" --results "$results" "${size[@]}")
            if [ "$tool" = clonesweep-jax ]; then
                cache=$(mktemp -d)
                "${run[@]}" -- --jax-cache "$cache" || status=1
                if [ "${WARM:-0}" = 1 ]; then "${run[@]}" -- --jax-cache "$cache" || status=1; fi
                rm -rf "$cache"
            else
                "${run[@]}" || status=1
            fi
        done
    done
done
exit $status
