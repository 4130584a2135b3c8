"""TPE's CPU per ask as the history grows: Optuna's TPESampler vs clonesweep's.

    python bench/tpe_ask.py                       # 200, 2,000 and 10,000 trials, x2
    python bench/tpe_ask.py --history 2000 --asks 30 --repeats 3
    python bench/tpe_ask.py --running 7 --storage journal --kinds fastmath clonesweep
    python bench/tpe_ask.py --history 2000 --profile tpe.prof --kinds clonesweep

Samplers (``--kinds``): ``optuna`` (Optuna's TPESampler), ``fastmath`` (Optuna's with only
the fast log-CDF: clonesweep's ``tpe`` before its history was kept across asks) and
``clonesweep`` (``clonesweep.orchestrator.study.plugins.TPESampler``). A study on in-memory
storage or on the group-commit journal (``--storage``), 3 parameters (a log int, a float, a
log float), constant liar, pre-filled with N finished random trials; ``--running K`` more
trials asked and left running (K+1 slots: the oldest is told as each new one is asked). One
ask+tell untimed (first imports), then ``--asks`` ask+tell rounds, timed with the process's
CPU clock. The samplers alternate (A B C A B C), each in a fresh process. ``--profile PATH``
writes a cProfile of the timed rounds of the last process (one history, one kind) to PATH;
``--steps`` prints, per process, the share of ask+tell CPU in each of TPE's top-level steps
(Optuna's and clonesweep's; timed with the CPU clock, lighter than a profiler's per-call cost).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from typing import Any

KINDS = ("optuna", "fastmath", "clonesweep")


def _sampler(kind: str) -> Any:
    import optuna

    from clonesweep.orchestrator import _optuna
    from clonesweep.orchestrator.study.plugins import TPESampler

    class FastMath(optuna.samplers.TPESampler):
        def sample_relative(self, study: Any, trial: Any, space: Any) -> Any:
            with _optuna.fast_tpe_math():
                return super().sample_relative(study, trial, space)

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            with _optuna.fast_tpe_math():
                return super().sample_independent(study, trial, name, dist)

    factory = {"optuna": optuna.samplers.TPESampler, "fastmath": FastMath,
               "clonesweep": TPESampler}[kind]
    return factory(seed=0, constant_liar=True)


def _time_steps() -> dict[str, float]:
    """Wrap TPE's top-level steps so that each adds its CPU seconds to the returned dict."""
    import optuna
    from optuna.samplers._tpe import parzen_estimator, sampler

    from clonesweep.orchestrator.study import parzen, tpe

    spent: dict[str, float] = {}
    steps = [(sampler, "_split_trials", "split (optuna)"),
             (sampler.TPESampler, "_get_internal_repr", "to arrays (optuna)"),
             (tpe.TrialHistory, "observations", "history (clonesweep)"),
             (parzen_estimator._ParzenEstimator, "__init__", "parzen fit"),
             (parzen_estimator._ParzenEstimator, "log_pdf", "log-pdf (optuna)"),
             (parzen, "log_pdf", "log-pdf (clonesweep)"),
             (parzen_estimator._ParzenEstimator, "sample", "draw candidates"),
             (optuna.Study, "_get_trials", "storage reads"), (optuna.Study, "tell", "tell")]

    def timed(f: Any, label: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return f(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.process_time() - started
        return call

    for owner, name, label in steps:
        setattr(owner, name, timed(getattr(owner, name), label))
    return spent


def one(kind: str, history: int, asks: int, running: int, storage_kind: str,
        profile: str | None, steps: bool = False) -> float:
    import optuna

    from clonesweep.orchestrator.study.journal import journal_storage
    from clonesweep.orchestrator.study.storage import commit

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {"units": optuna.distributions.IntDistribution(16, 256, log=True),
             "rate": optuna.distributions.FloatDistribution(0.0, 0.5),
             "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    storage = None
    if storage_kind == "journal":
        storage = journal_storage(os.path.join(tempfile.mkdtemp(), "study.log"))
    study = optuna.create_study(sampler=_sampler(kind), storage=storage)
    rng = random.Random(0)
    study.add_trials([optuna.trial.create_trial(
        params={"units": rng.randint(16, 256), "rate": rng.uniform(0, 0.5),
                "lr": 10 ** rng.uniform(-4, -1)}, distributions=dists, value=rng.random())
        for _ in range(history)])
    inflight = [study.ask(dists) for _ in range(running)]
    study.tell(study.ask(dists), rng.random())  # first imports (scipy.special) not timed

    def rounds() -> None:
        for _ in range(asks):
            inflight.append(study.ask(dists))
            study.tell(inflight.pop(0), rng.random())
            commit(study)  # the journal's fsync per told trial (nothing in memory)

    spent = _time_steps() if steps else None
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    if spent is not None:
        spent.clear()  # the untimed first ask's steps
    started = time.process_time()
    rounds()
    total = time.process_time() - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    if spent is not None:
        print(f"{kind} {storage_kind} {history}: " + ", ".join(
            f"{label} {100 * s / total:.0f}%" for label, s in
            sorted(spent.items(), key=lambda kv: -kv[1])), file=sys.stderr)
    return 1000 * total / asks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, nargs="+", default=[200, 2000, 10000])
    parser.add_argument("--asks", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--running", type=int, default=0)
    parser.add_argument("--storage", choices=("memory", "journal"), default="memory")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--profile", metavar="PATH")
    parser.add_argument("--steps", action="store_true")
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(one(args.case[0], int(args.case[1]), args.asks, args.running,
                             args.storage, args.profile, args.steps)))
        return
    print(f"load at start {os.getloadavg()[0]:.1f}; {args.storage} storage, "
          f"{args.running} running, {args.asks} asks per process")
    last = args.kinds[-1]
    print(f"{'history':>8}  " + "  ".join(f"{k + ' ms/ask':>20}" for k in args.kinds)
          + "".join(f"  {k}/{last}" for k in args.kinds[:-1]))
    for history in args.history:
        got: dict[str, list[float]] = {k: [] for k in args.kinds}
        for _ in range(args.repeats):
            for kind in got:
                command = [sys.executable, __file__, "--case", kind, str(history),
                           "--asks", str(args.asks), "--running", str(args.running),
                           "--storage", args.storage]
                if args.profile:
                    command += ["--profile", args.profile]
                if args.steps:
                    command.append("--steps")
                out = subprocess.run(command, capture_output=True, text=True, check=True)
                if args.steps:
                    print("   " + out.stderr.strip().splitlines()[-1], flush=True)
                got[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
        cells = "  ".join(f"{' / '.join(f'{x:.1f}' for x in got[k]):>20}" for k in args.kinds)
        ratios = "".join(f"  {sum(got[k]) / sum(got[last]):>{len(k) + len(last) + 1}.2f}x"
                         for k in args.kinds[:-1])
        print(f"{history:>8}  {cells}{ratios}", flush=True)
    print(f"load at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
