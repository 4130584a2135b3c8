"""TPE's CPU per ask as the history grows: Optuna's TPESampler vs clonesweep's (fast math).

    python bench/tpe_ask.py                       # 200, 2,000 and 10,000 trials, both, x2
    python bench/tpe_ask.py --history 2000 --asks 30 --repeats 3

In-memory storage, 3 parameters (a log int, a float, a log float), constant liar, a study
pre-filled with N finished random trials; one ask+tell untimed (first imports), then
``--asks`` ask+tell rounds, timed with the process's CPU clock. The two samplers alternate
(A B A B), each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time


def one(kind: str, history: int, asks: int) -> float:
    import optuna

    from clonesweep.orchestrator.study.plugins import TPESampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {"units": optuna.distributions.IntDistribution(16, 256, log=True),
             "rate": optuna.distributions.FloatDistribution(0.0, 0.5),
             "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    factory = TPESampler if kind == "clonesweep" else optuna.samplers.TPESampler
    study = optuna.create_study(sampler=factory(seed=0, constant_liar=True))
    rng = random.Random(0)
    study.add_trials([optuna.trial.create_trial(
        params={"units": rng.randint(16, 256), "rate": rng.uniform(0, 0.5),
                "lr": 10 ** rng.uniform(-4, -1)}, distributions=dists, value=rng.random())
        for _ in range(history)])
    study.tell(study.ask(dists), rng.random())  # first imports (scipy.special) not timed
    started = time.process_time()
    for _ in range(asks):
        trial = study.ask(dists)
        study.tell(trial, rng.random())
    return 1000 * (time.process_time() - started) / asks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, nargs="+", default=[200, 2000, 10000])
    parser.add_argument("--asks", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(one(args.case[0], int(args.case[1]), args.asks)))
        return
    import os

    print(f"load at start {os.getloadavg()[0]:.1f}")
    print(f"{'history':>8}  {'optuna ms/ask':>22}  {'clonesweep ms/ask':>22}  ratio")
    for history in args.history:
        got: dict[str, list[float]] = {"optuna": [], "clonesweep": []}
        for _ in range(args.repeats):
            for kind in got:
                out = subprocess.run([sys.executable, __file__, "--case", kind, str(history),
                                      "--asks", str(args.asks)], capture_output=True,
                                     text=True, check=True)
                got[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
        a, b = got["optuna"], got["clonesweep"]
        print(f"{history:>8}  {' / '.join(f'{x:.1f}' for x in a):>22}  "
              f"{' / '.join(f'{x:.1f}' for x in b):>22}  {sum(a) / sum(b):.2f}x", flush=True)
    print(f"load at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
