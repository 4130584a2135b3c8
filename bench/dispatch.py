"""Dispatch throughput: trivial trials through clonesweep's real driver loop and through Ray Tune.

    python bench/dispatch.py                     # the storage table, then every end-to-end case
    python bench/dispatch.py --trials 2000 --slots 8
    python bench/dispatch.py --only storage      # storage alone (no Ray)

Two tables and a final JSON line:

1. *Storage alone*: ask + 15 user attributes + tell, random sampler, one process, no Ray, per
   storage (SQLite file, SQLite WAL, Optuna's JournalFileBackend, clonesweep's group-commit
   journal, in memory). Every storage but memory makes each told trial durable (fsync).
2. *End to end*: ``run_sweep`` (the real sweep loop, Ray backend, storage, run folder) with the
   Ray backend's actor class swapped for :class:`TrivialWorker`, which returns a COMPLETE result
   at once and imports no Keras; against Ray Tune (a function trainable that reports once,
   ``reuse_actors=True``, its default BasicVariantGenerator: random sampling) with the same
   number of concurrent trials. Each case runs in a fresh process. Trials/s is measured between
   the 200th and the last finished trial (worker start-up excluded); driver RSS is read at the
   200th and the last; driver CPU ms/trial is the driver process's CPU time (its Ray threads
   included) over the same span.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARK = 200  # the first mark: throughput is measured from here to the last trial


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _rss_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


# -- clonesweep ---------------------------------------------------------------------------------
class TrivialWorker:
    """The worker actor's methods, returning at once: what the driver pays per trial."""

    def __init__(self, job: Any, name: str) -> None:
        import ray

        self.name, self.node = name, ray.get_runtime_context().get_node_id()

    def where(self) -> tuple[str, int]:
        return self.node, os.getpid()

    def run(self, spec: Any, broker: Any) -> Any:
        from clonesweep.trials import TrialResult, TrialState

        value = sum(float(v) for v in spec.params.values()) % 1.0
        return TrialResult(spec.number, TrialState.COMPLETE, value=value,
                           history={"val_accuracy": [value]}, seeds={"trial": spec.seed},
                           node=self.node, worker=self.name, attempt=spec.attempt)

    def best_model(self, number: int) -> bytes | None:
        return None

    def heavy_imports(self) -> list[str]:
        return sorted(m for m in ("keras", "tensorflow", "jax", "torch") if m in sys.modules)


def sweep_file(folder: Path, trials: int, slots: int, sampler: str, storage: str | None) -> Path:
    path = folder / "dispatch.yaml"
    store = f"\n  storage: '{storage}'" if storage else ""
    path.write_text(f"""name: dispatch
model: {{config: {ROOT / 'configs' / 'digits_mlp.json'}}}
data: {{loader: clonesweep.datasets:digits}}
training: {{epochs: 1, batch_size: 64, loss: sparse_categorical_crossentropy, metrics: [accuracy]}}
objective: {{metric: val_accuracy, direction: maximize}}
parameters:
  layers.hidden.units: {{min: 16, max: 256, log: true}}
  layers.drop.rate: {{min: 0.0, max: 0.5}}
  optimizer.learning_rate: {{min: 0.0001, max: 0.1, log: true}}
sweep:
  trials: {trials}
  parallel: {slots}
  sampler: {{name: {sampler}, seed: 0}}
  pruner: none
  seed: 0{store}
""")
    return path


def prefill(spec: Any, url: str, history: int) -> None:
    """Give the sweep's study ``history`` finished trials (random params, values in [0, 1)),
    as a long-running sweep would hold: what a sampler that reads the history pays for."""
    import random

    import optuna

    from clonesweep.orchestrator.study.plugins import distributions
    from clonesweep.orchestrator.study.storage import open_study

    study = open_study(spec, url)
    dists = distributions(spec.parameters)
    rng = random.Random(0)
    trials = []
    for _ in range(history):
        params = {k: (d.to_external_repr(rng.uniform(*_bounds(d)))
                      if not isinstance(d, optuna.distributions.CategoricalDistribution)
                      else rng.choice(d.choices)) for k, d in dists.items()}
        params = {k: (round(v) if isinstance(d, optuna.distributions.IntDistribution) else v)
                  for (k, v), d in zip(params.items(), dists.values(), strict=True)}
        trials.append(optuna.trial.create_trial(params=params, distributions=dists,
                                                value=rng.random()))
    study.add_trials(trials)


def _bounds(d: Any) -> tuple[float, float]:
    return float(d.low), float(d.high)


def run_clonesweep(trials: int, slots: int, sampler: str, storage: str,
                   profile: str | None = None, history: int = 0) -> dict[str, Any]:
    """One end-to-end case in this process. ``storage``: journal (the run folder's default)
    or sqlite (a SQLite file named in ``sweep.storage``). ``history``: finished trials the
    study holds before the sweep starts (measured trials come on top)."""
    import optuna
    import ray

    from clonesweep.orchestrator import base_model_config, run_sweep
    from clonesweep.orchestrator.backends.ray.backend import RayBackend
    from clonesweep.spec import load_sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    heavy: list[str] = []
    workers_mb: list[float] = []

    class Backend(RayBackend):
        worker_class = TrivialWorker

        def start(self, job: Any, n: int) -> None:
            super().start(job, n)
            # Every worker up before the sweep's clock starts.
            pids = [pid for _, pid in ray.get([a.where.remote() for a in self._actors])]
            heavy.extend(ray.get(self._actors[0].heavy_imports.remote()))
            workers_mb.append(sum(_rss_of(pid) for pid in pids) / len(pids))

    clock = Clock()
    ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False,
             object_store_memory=300 * 2**20, _node_ip_address="127.0.0.1")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        url = f"sqlite:///{tmp}/study.db" if storage == "sqlite" else None
        spec = load_sweep(sweep_file(Path(tmp), trials + history, slots, sampler, url))
        spec = replace(spec, sweep=replace(spec.sweep, run_dir=Path(tmp) / "runs"))
        if history:
            from clonesweep.orchestrator.study.storage import storage_url

            prefill(spec, storage_url(spec), history)
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            clock.profiler = profiler
        run_sweep(spec, base_model_config(spec), Backend(), clock)
        if profiler is not None and profile:
            profiler.dump_stats(profile)
    ray.shutdown()
    out = clock.summary(trials)
    out.update(tool="clonesweep", storage=storage, sampler=sampler, slots=slots, history=history,
               worker_heavy_imports=heavy, driver_keras="keras" in sys.modules,
               worker_rss_mb=round(workers_mb[0], 1) if workers_mb else None)
    return out


class Clock:
    """A sweep Progress (and a Tune callback's counter) that marks time, CPU and RSS."""

    def __init__(self) -> None:
        self.finished = 0
        self.marks: dict[int, tuple[float, float, float]] = {}
        self.profiler: Any = None

    def mark(self) -> None:
        self.finished += 1
        if self.finished == MARK:
            if self.profiler is not None:
                self.profiler.enable()
            self.marks[MARK] = (time.perf_counter(), time.process_time(), rss_mb())
        self.marks[-1] = (time.perf_counter(), time.process_time(), rss_mb())

    def summary(self, trials: int) -> dict[str, Any]:
        if self.profiler is not None:
            self.profiler.disable()
        (t0, c0, r0), (t1, c1, r1) = self.marks[MARK], self.marks[-1]
        n = self.finished - MARK
        return {"trials": self.finished, "trials_per_s": round(n / (t1 - t0), 1),
                "driver_cpu_ms_per_trial": round(1000 * (c1 - c0) / n, 2),
                f"rss_mb_at_{MARK}": round(r0, 1), f"rss_mb_at_{self.finished}": round(r1, 1),
                "rss_kb_per_trial": round(1024 * (r1 - r0) / n, 2)}

    # Progress
    def on_start(self, *args: Any) -> None: ...
    def on_trial_start(self, *args: Any) -> None: ...
    def on_epoch(self, *args: Any) -> None: ...
    def on_tick(self, *args: Any) -> None: ...
    def on_end(self, *args: Any) -> None: ...

    def on_trial_end(self, result: Any, counts: Any, best: Any, retried: bool) -> None:
        if not retried:
            self.mark()


# -- Ray Tune -----------------------------------------------------------------------------------
def run_tune(trials: int, slots: int) -> dict[str, Any]:
    import ray
    from ray import tune

    clock = Clock()

    class Marks(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
            clock.mark()

    def trainable(config: dict[str, Any]) -> None:
        tune.report({"val_accuracy": sum(config.values()) % 1.0})

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False,
             object_store_memory=300 * 2**20, _node_ip_address="127.0.0.1")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        tuner = tune.Tuner(
            trainable,
            param_space={"units": tune.lograndint(16, 256),
                         "rate": tune.uniform(0.0, 0.5),
                         "learning_rate": tune.loguniform(1e-4, 1e-1)},
            tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=slots,
                                        reuse_actors=True, metric="val_accuracy", mode="max"),
            run_config=tune.RunConfig(storage_path=tmp, name="dispatch", verbose=0,
                                      callbacks=[Marks()]))
        tuner.fit()
    ray.shutdown()
    out = clock.summary(trials)
    out.update(tool="ray-tune", storage="tune default (files)", sampler="random (basic variant)",
               slots=slots)
    return out


# -- storage alone ------------------------------------------------------------------------------
def storage_alone(kind: str, trials: int) -> dict[str, Any]:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from clonesweep.orchestrator.study.journal import commit, journal_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        storage: Any
        if kind in ("sqlite", "sqlite-wal"):
            storage = optuna.storages.RDBStorage(f"sqlite:///{tmp}/s.db")
            if kind == "sqlite-wal":
                with storage.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        elif kind == "optuna-journal":
            storage = JournalStorage(JournalFileBackend(f"{tmp}/s.log"))
        elif kind == "group-commit-journal":
            storage = journal_storage(f"{tmp}/s.log")
        else:
            storage = optuna.storages.InMemoryStorage()
        study = optuna.create_study(storage=storage,
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        dists = {"units": optuna.distributions.IntDistribution(16, 256, log=True),
                 "rate": optuna.distributions.FloatDistribution(0.0, 0.5),
                 "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
        started = time.perf_counter()
        for i in range(trials):
            trial = study.ask(dists)
            trial.set_user_attr("seed", i)
            commit(storage)  # as the sweep loop does before it waits
            for k in range(15):
                trial.set_user_attr(f"attr{k}", [0.1, 0.2, 0.3] if k % 3 else "x" * 40)
            study.tell(trial, 0.5)
        wall = time.perf_counter() - started
    return {"storage": kind, "trials": trials, "trials_per_s": round(trials / wall, 1),
            "ms_per_trial": round(1000 * wall / trials, 2),
            "durable": kind != "memory"}


STORAGES = ("sqlite", "sqlite-wal", "optuna-journal", "group-commit-journal", "memory")


def _child(args: list[str]) -> dict[str, Any]:
    """Run one case in a fresh interpreter; its last stdout line is its JSON."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--storage-trials", type=int, default=300)
    parser.add_argument("--only", choices=("storage", "end-to-end"))
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case, in a child process
    parser.add_argument("--profile", help="write a cProfile of the driver (one --case) here")
    parser.add_argument("--history", type=int, default=0,
                        help="finished trials the study holds before the sweep (TPE's cost "
                             "grows with them)")
    args = parser.parse_args()
    if args.case:
        tool, _, rest = args.case.partition(":")
        if tool == "storage":
            out = storage_alone(rest, args.storage_trials)
        elif tool == "tune":
            out = run_tune(args.trials, args.slots)
        else:
            storage, _, sampler = rest.partition(":")
            out = run_clonesweep(args.trials, args.slots, sampler, storage, args.profile,
                                 args.history)
        print(json.dumps(out))
        return
    load = os.getloadavg()[0]
    print(f"load average at start: {load:.2f} ({os.cpu_count()} CPUs)")
    report: dict[str, Any] = {"load_at_start": round(load, 2)}
    if args.only != "end-to-end":
        rows = [_child(["--case", f"storage:{k}", "--storage-trials", str(args.storage_trials)])
                for k in STORAGES]
        print(f"\nstorage alone: ask + 15 user attrs + tell, random sampler, "
              f"{args.storage_trials} trials")
        print(f"{'storage':<22}{'trials/s':>10}{'ms/trial':>10}  durable")
        for r in rows:
            print(f"{r['storage']:<22}{r['trials_per_s']:>10}{r['ms_per_trial']:>10}  "
                  f"{'yes' if r['durable'] else 'no'}")
        report["storage"] = rows
    if args.only != "storage":
        cases = [("tune", []), ("clonesweep", ["sqlite", "random"]),
                 ("clonesweep", ["journal", "random"]), ("clonesweep", ["journal", "tpe"])]
        rows = []
        for tool, rest in cases:
            case = ":".join([tool, *rest])
            rows.append(_child(["--case", case, "--trials", str(args.trials),
                                "--slots", str(args.slots), "--history", str(args.history)]))
        tune_rate = rows[0]["trials_per_s"]
        last = f"rss_mb_at_{args.trials}"
        print(f"\nend to end: {args.trials} trivial trials, {args.slots} at a time "
              f"(trials/s from trial {MARK} to the last)")
        print(f"{'tool':<11}{'storage':<22}{'sampler':<24}{'trials/s':>9}{'vs Tune':>8}"
              f"{'cpu ms/tr':>10}{f'RSS@{MARK}':>9}{f'RSS@{args.trials}':>10}{'KB/tr':>7}")
        for r in rows:
            print(f"{r['tool']:<11}{r['storage']:<22}{r['sampler']:<24}{r['trials_per_s']:>9}"
                  f"{r['trials_per_s'] / tune_rate:>7.1f}x{r['driver_cpu_ms_per_trial']:>10}"
                  f"{r[f'rss_mb_at_{MARK}']:>9}{r.get(last, float('nan')):>10}"
                  f"{r['rss_kb_per_trial']:>7}")
        report["end_to_end"] = rows
    report["load_at_end"] = round(os.getloadavg()[0], 2)
    print(f"load average at end: {report['load_at_end']:.2f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
