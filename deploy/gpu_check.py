"""GPU check: clonesweep's worker path on Keras's JAX backend, on one GPU, without Ray.

Run by ``deploy/gpu-check.sh`` on a machine that has JAX (with CUDA) but neither Ray nor
TensorFlow. Three measurements, each in processes of its own so that each starts with an empty
device:

1. **Packed trials.** ``--packed`` worker processes share the one GPU (each capped at
   ``1/packed`` of its memory, as a Ray worker with ``gpu: 1/packed`` would be) and run
   ``--trials`` trials of the small CNN of ``configs/digits_cnn.json`` through
   :class:`clonesweep.workers.runner.TrialRunner`, the code a Ray worker actor runs.
   Prints trials per minute and the peak GPU memory of each worker (one trial at a time).
2. **Fused ensemble.** ``--members`` seeded members of ``configs/digits_mlp.json`` trained one
   after another, then as one fused group (on JAX: :mod:`clonesweep.workers.engines.jaxgroup`).
   Prints both times, the speedup and how far the members' validation accuracies differ.
3. **Fused ensembles of any model** (:func:`run_fused_any`): the same for the Conv+BatchNorm
   CNN and the small Transformer, which only the JAX engine fuses.
4. **Packed trials.** ``--packed-trials`` sweep trials of the CNN that differ in learning
   rate, Dropout rate and weight decay, trained one by one, then as one packed group
   (:mod:`clonesweep.workers.engines.packed`: one vmapped program). Prints both times, the
   speedup and how far the trials' validation accuracies differ.

The data are synthetic 8x8 images (class templates plus noise), made here: no download and
no scikit-learn. The last line printed is a JSON summary; the exit code is 0 when every
trial completed (and, without ``--cpu``, JAX ran on a GPU).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


# -- data (called inside the workers through DataSpec("gpu_check:...")) ---------------------
def synthetic_images(n_train: int = 2048, n_val: int = 512, seed: int = 0) -> tuple[Any, ...]:
    """10 classes of 8x8x1 images: a fixed template per class plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(10, 8, 8, 1)).astype("float32")

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n).astype("int32")
        noise = rng.normal(size=(n, 8, 8, 1)).astype("float32")
        return templates[y] + 0.8 * noise, y

    x_tr, y_tr = draw(n_train)
    x_va, y_va = draw(n_val)
    return x_tr, y_tr, x_va, y_va


def synthetic_vectors(n_train: int = 2048, n_val: int = 512, seed: int = 0) -> tuple[Any, ...]:
    """The same images, flattened to 64 features (the digits MLP's input)."""
    x_tr, y_tr, x_va, y_va = synthetic_images(n_train, n_val, seed)
    return x_tr.reshape(len(x_tr), 64), y_tr, x_va.reshape(len(x_va), 64), y_va


# -- worker processes ------------------------------------------------------------------------
def _job(config: str, loader: str, sizes: dict[str, int], epochs: int,
         fraction: float | None) -> Any:
    from clonesweep.spec.model import DataSpec, ObjectiveSpec, TrainingSpec
    from clonesweep.workers.runner import WorkerJob

    return WorkerJob(
        base_config_json=(CONFIGS / config).read_text(),
        imports=(),
        data=DataSpec(loader, dict(sizes)),
        training=TrainingSpec(epochs=epochs, batch_size=64,
                              optimizer_config={"learning_rate": 0.003}),
        objective=ObjectiveSpec(),
        keep_best=False,
        gpu_memory_fraction=fraction,
    )


class _NoPruning:
    def report(self, step: int, value: float) -> bool:
        return False


def _device() -> dict[str, Any]:
    import jax

    dev = jax.local_devices()[0]
    stats = dev.memory_stats() or {}
    return {"platform": dev.platform, "device": str(getattr(dev, "device_kind", dev)),
            "peak_bytes": stats.get("peak_bytes_in_use"),
            "bytes_limit": stats.get("bytes_limit")}


def packed_worker(args: tuple[int, list[tuple[int, dict[str, Any], int]], dict[str, Any]]
                  ) -> dict[str, Any]:
    """One packed worker: a TrialRunner that runs its share of the trials."""
    index, specs, settings = args
    from clonesweep.trials import TrialSpec
    from clonesweep.workers.runner import TrialRunner

    runner = TrialRunner(_job("digits_cnn.json", "gpu_check:synthetic_images",
                              settings["sizes"], settings["epochs"], settings["fraction"]),
                         worker=f"packed-{index}")
    trials = []
    for number, params, seed in specs:
        t0 = time.perf_counter()
        result = runner.run(TrialSpec(number, params, seed), _NoPruning())
        trials.append({"number": number, "state": result.state.value,
                       "value": result.value, "seconds": round(time.perf_counter() - t0, 3),
                       "message": result.message[:300]})
    return {"worker": index, "trials": trials, **_device()}


def ensemble_worker(settings: dict[str, Any]) -> dict[str, Any]:
    """Separate members, then the same members fused, on one TrialRunner."""
    from clonesweep.trials import TrialSpec
    from clonesweep.workers.runner import TrialRunner

    try:
        from clonesweep.workers.member import FusedGroup
    except ImportError as exc:
        return {"skipped": f"fused ensembles are not in this checkout ({exc})"}
    job = _job(settings.get("config", "digits_mlp.json"),
               settings.get("loader", "gpu_check:synthetic_vectors"), settings["sizes"],
               settings["epochs"], None)
    from dataclasses import replace

    runner = TrialRunner(replace(job, keep_members=True), worker="ensemble")
    params: dict[str, Any] = {}
    runner.run(TrialSpec(10_000, params, 1), _NoPruning())  # warm-up: backend, data
    runner.member_output(10_000)
    members = [TrialSpec(i, params, 1000 + i) for i in range(settings["members"])]
    t0 = time.perf_counter()
    separate = [runner.run(m, _NoPruning()) for m in members]
    separate_s = time.perf_counter() - t0
    for m in members:
        runner.member_output(m.number)
    t0 = time.perf_counter()
    group = runner.run_fused(FusedGroup(members[0].number, tuple(members)))
    fused_s = time.perf_counter() - t0
    fused_values = []
    for m in members:
        out = runner.member_output(m.number)
        result = getattr(out, "result", None)
        fused_values.append(None if result is None else result.value)
    sep_values = [r.value for r in separate]
    diffs = [abs(a - b) for a, b in zip(sep_values, fused_values, strict=True)
             if a is not None and b is not None]
    return {"members": len(members), "separate_s": round(separate_s, 3),
            "fused_s": round(fused_s, 3), "speedup": round(separate_s / fused_s, 2),
            "fused_message": group.message, "fused_engine": group.engine,
            "separate_val_accuracy": sep_values,
            "fused_val_accuracy": fused_values,
            "max_val_accuracy_diff": max(diffs) if diffs else None,
            "all_complete": all(r.state.value == "complete" for r in separate)
            and group.state.value == "complete" and None not in fused_values,
            **_device()}


def packed_trials_worker(settings: dict[str, Any]) -> dict[str, Any]:
    """Sweep trials of one CNN structure (learning rate, Dropout rate and weight decay
    differ) trained one by one, then as one packed group (one vmapped program on JAX)."""
    from clonesweep.trials import TrialSpec
    from clonesweep.workers.runner import TrialRunner

    try:
        from clonesweep.trials import PackedGroup
    except ImportError as exc:
        return {"skipped": f"packed trials are not in this checkout ({exc})"}
    runner = TrialRunner(_job("digits_cnn.json", "gpu_check:synthetic_images",
                              settings["sizes"], settings["epochs"], None), worker="packed")
    keys = ("optimizer.learning_rate", "layers.drop.rate", "optimizer.weight_decay")
    rng = np.random.default_rng(0)
    trials = tuple(TrialSpec(i, {keys[0]: float(10 ** rng.uniform(-3.3, -2)),
                                 keys[1]: float(rng.uniform(0.0, 0.5)),
                                 keys[2]: float(rng.uniform(0.0, 0.01))}, 500 + i)
                   for i in range(settings["trials"]))
    # Warm-ups: the data, the backend, and one packed group of two (each group compiles its
    # own program: the timed packed group pays its compile, as in a sweep).
    runner.run(TrialSpec(10_000, dict(trials[0].params), 1), _NoPruning())
    warm = tuple(TrialSpec(10_001 + i, dict(t.params), 2 + i) for i, t in enumerate(trials[:2]))
    runner.run_packed(PackedGroup(warm, keys, settings["mode"]), [_NoPruning()] * len(warm))
    t0 = time.perf_counter()
    alone = [runner.run(t, _NoPruning()) for t in trials]
    alone_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    packed = runner.run_packed(PackedGroup(trials, keys, settings["mode"]),
                               [_NoPruning()] * len(trials))
    packed_s = time.perf_counter() - t0
    diffs = [abs(a.value - b.value) for a, b in zip(alone, packed, strict=True)
             if a.value is not None and b.value is not None]
    return {"trials": len(trials), "alone_s": round(alone_s, 3),
            "packed_s": round(packed_s, 3), "speedup": round(alone_s / packed_s, 2),
            "engines": sorted({r.engine for r in packed}),
            "fallback": next((str(r.engine_fallback) for r in packed if r.engine_fallback),
                             None),
            "max_val_accuracy_diff": max(diffs) if diffs else None,
            "all_complete": all(r.state.value == "complete" for r in [*alone, *packed]),
            **_device()}


def run_packed_trials(args: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    settings = {"sizes": args.sizes, "epochs": args.epochs, "trials": args.packed_trials,
                "mode": "vmap"}
    with ctx.Pool(1) as pool:
        out: dict[str, Any] = pool.apply(packed_trials_worker, (settings,))
    if "skipped" in out:
        print(f"packed trials: skipped: {out['skipped']}")
        return out
    print(f"packed trials: {out['trials']} CNN trials (lr, dropout, weight decay differ): "
          f"alone {out['alone_s']} s, packed {out['packed_s']} s -> speedup "
          f"{out['speedup']}x on {out['engines']} (max val_accuracy difference "
          f"{out['max_val_accuracy_diff']}); peak {_mib(out['peak_bytes'])}")
    return out


# -- driver ----------------------------------------------------------------------------------
def _params(n: int, seed: int) -> list[dict[str, Any]]:
    """Sampled like a sweep would (Optuna, if it is installed; else a fixed grid)."""
    space = {"layers.conv1.filters": [8, 16, 32], "optimizer.learning_rate": (1e-3, 1e-2)}
    try:
        import optuna
    except ImportError:
        return [{"layers.conv1.filters": space["layers.conv1.filters"][i % 3],
                 "optimizer.learning_rate": 3e-3} for i in range(n)]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append({"layers.conv1.filters": trial.suggest_categorical(
                        "layers.conv1.filters", space["layers.conv1.filters"]),
                    "optimizer.learning_rate": trial.suggest_float(
                        "optimizer.learning_rate", *space["optimizer.learning_rate"],
                        log=True)})
    return out


def _mib(n: Any) -> str:
    return "n/a (no GPU memory stats)" if n is None else f"{n / 2**20:.1f} MiB"


def run_packed(args: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    params = _params(args.trials, seed=0)
    specs = [(i, p, 7 + i) for i, p in enumerate(params)]
    shares = [specs[w::args.packed] for w in range(args.packed)]
    settings = {"sizes": args.sizes, "epochs": args.epochs, "fraction": 1.0 / args.packed}
    t0 = time.perf_counter()
    with ctx.Pool(args.packed) as pool:
        workers = pool.map(packed_worker, [(w, s, settings) for w, s in enumerate(shares)])
    wall = time.perf_counter() - t0
    trials = [t for w in workers for t in w["trials"]]
    done = sum(t["state"] == "complete" for t in trials)
    out = {"workers": args.packed, "trials": len(trials), "complete": done,
           "wall_s": round(wall, 2), "trials_per_min": round(60 * len(trials) / wall, 1),
           "trial_s": sorted(t["seconds"] for t in trials),
           "peak_bytes_per_worker": [w["peak_bytes"] for w in workers],
           "bytes_limit_per_worker": [w["bytes_limit"] for w in workers],
           "platform": workers[0]["platform"], "device": workers[0]["device"],
           "failures": [t["message"] for t in trials if t["state"] != "complete"]}
    print(f"packed: {len(trials)} CNN trials on {args.packed} workers sharing one "
          f"{out['platform']} device ({out['device']}): {wall:.1f} s wall, "
          f"{out['trials_per_min']} trials/min, {done}/{len(trials)} complete")
    for w in workers:
        print(f"  worker {w['worker']}: peak {_mib(w['peak_bytes'])} of a "
              f"{_mib(w['bytes_limit'])} cap; trials took "
              f"{', '.join(str(t['seconds']) for t in w['trials'])} s")
    return out


def run_ensemble(args: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    settings = {"sizes": args.sizes, "epochs": args.epochs, "members": args.members}
    with ctx.Pool(1) as pool:
        out: dict[str, Any] = pool.apply(ensemble_worker, (settings,))
    if "skipped" in out:
        print(f"fused ensemble: skipped: {out['skipped']}")
        return out
    print(f"fused ensemble: {out['members']} MLP members: separate {out['separate_s']} s, "
          f"fused {out['fused_s']} s -> speedup {out['speedup']}x "
          f"(max val_accuracy difference {out['max_val_accuracy_diff']}); "
          f"peak {_mib(out['peak_bytes'])}; {out['fused_message']}")
    return out


def run_fused_any(args: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    """Fused ensembles of models only the JAX engine fuses: the Conv+BatchNorm CNN and the
    small Transformer (configs/digits_cnn_bn.json, digits_transformer.json), each in a fresh
    process on a GPU: ``--members`` members one after another, then as one fused group
    (:mod:`clonesweep.workers.engines.jaxgroup`)."""
    names = ("cnn_bn", "transformer")
    cases = [{"sizes": args.sizes, "epochs": args.epochs, "members": args.members,
              "config": f"digits_{name}.json", "loader": "gpu_check:synthetic_images"}
             for name in names]
    # On a GPU each case gets a fresh process (an empty device); the CPU smoke run saves a
    # process start and a Keras import by running both in one.
    with ctx.Pool(1, maxtasksperchild=None if args.cpu else 1) as pool:
        done: list[dict[str, Any]] = pool.map(ensemble_worker, cases, chunksize=1)
    out: dict[str, Any] = {}
    for name, case in zip(names, done, strict=True):
        out[name] = case
        if "skipped" in case:
            print(f"fused {name}: skipped: {case['skipped']}")
            continue
        print(f"fused {name}: {case['members']} members: separate {case['separate_s']} s, "
              f"fused {case['fused_s']} s -> speedup {case['speedup']}x on "
              f"{case['fused_engine'] or '?'} (max val_accuracy difference "
              f"{case['max_val_accuracy_diff']}); peak {_mib(case['peak_bytes'])}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true",
                   help="smoke mode: JAX on the CPU, tiny sizes (no GPU needed)")
    p.add_argument("--trials", type=int, help="CNN trials in all (default 12; --cpu 2)")
    p.add_argument("--packed", type=int, help="workers sharing the GPU (default 4; --cpu 2)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default 5; --cpu 1)")
    p.add_argument("--members", type=int, help="ensemble members (default 8; --cpu 2)")
    p.add_argument("--skip-ensemble", action="store_true")
    p.add_argument("--skip-fused-any", action="store_true",
                   help="skip the fused CNN+BatchNorm and Transformer ensembles")
    p.add_argument("--packed-trials", type=int,
                   help="trials in the packed-trials case (default 16; --cpu 2)")
    p.add_argument("--skip-packed-trials", action="store_true")
    args = p.parse_args(argv)
    small = args.cpu
    args.trials = args.trials or (2 if small else 12)
    args.packed = args.packed or (2 if small else 4)
    args.epochs = args.epochs or (1 if small else 5)
    args.members = args.members or (2 if small else 8)
    args.packed_trials = args.packed_trials or (2 if small else 16)
    args.sizes = {"n_train": 256, "n_val": 128} if small else {"n_train": 4096, "n_val": 1024}

    os.environ["KERAS_BACKEND"] = "jax"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if small:
        os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # workers import gpu_check
    ctx = mp.get_context("spawn")  # a fresh process per measurement: an empty device each
    started = time.perf_counter()
    summary: dict[str, Any] = {"mode": "cpu" if small else "gpu",
                               "packed": run_packed(args, ctx)}
    if not args.skip_ensemble:
        summary["ensemble"] = run_ensemble(args, ctx)
    if not args.skip_fused_any:
        summary["fused_any"] = run_fused_any(args, ctx)
    if not args.skip_packed_trials:
        summary["packed_trials"] = run_packed_trials(args, ctx)
    summary["total_s"] = round(time.perf_counter() - started, 1)
    packed = summary["packed"]
    ok = packed["complete"] == packed["trials"]
    ens = summary.get("ensemble", {})
    ok = ok and ("skipped" in ens or ens.get("all_complete", True))
    ok = ok and all("skipped" in c or c.get("all_complete")
                    for c in summary.get("fused_any", {}).values())
    pt = summary.get("packed_trials", {})
    ok = ok and ("skipped" in pt or pt.get("all_complete", True))
    if not small and packed["platform"] != "gpu":
        print(f"JAX ran on {packed['platform']}, not a GPU: is jax[cuda] installed and a GPU "
              "visible (nvidia-smi)?", file=sys.stderr)
        ok = False
    print(f"total {summary['total_s']} s: {'OK' if ok else 'FAILED'}")
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
