"""The paper's experiments as driver commands, for GPU/TPU machines (one command per run).

  python experiments/paper.py main --dataset=cifar10 --seeds=0,1,2           # print the commands
  python experiments/paper.py main --dataset=svhn --data_dir=$HOME/tfds --run # run them in turn
  python experiments/paper.py sener --dataset=cifar10                         # Sener & Savarese schedule
  python experiments/paper.py longtail --dataset=cifar10                      # 25,000 passive, then coreset

main: queries {sr, mcdropout, coreset} x {iNAS, fixed A(1,2), fixed A(2,4)}, plus random querying
with iNAS, all with --preset=paper (the paper's protocol). longtail: Geifman & El-Yaniv's long-tail
baseline, --strategy=longtail: 25,000 labels drawn at random, one architecture chosen on them by
iNAS steps until the current one wins, then that architecture fixed while coreset queries +5,000
per round to 50,000 (compare with main's iNAS + sr and iNAS + coreset curves). Each command resumes from its workdir, so
rerunning this script after a preemption continues every unfinished run. Afterwards:
  python -m inas_jax.report --out=report runs/main/*
"""
from __future__ import annotations

import argparse
import itertools
import shlex
import subprocess
import sys

from inas_jax.config import from_preset, run_name

STRATEGIES = [("inas", None), ("fixed", "1,2"), ("fixed", "2,4")]


def grid(queries: list[str]) -> list[tuple[str, str | None, str]]:
    """(strategy, arch, query) of every query under iNAS and the two fixed architectures."""
    return [(s, a, q) for q in queries for s, a in STRATEGIES]


# A tier is a list of (strategy, arch, query) and, optionally, the seeds it is declared for (a study's
# plan); tiers without seeds take the seeds asked for.
SETTINGS = {
    "main": dict(tiers=[grid(["sr", "mcdropout", "coreset"]) + [("inas", None, "random")]], extra=[]),
    # The first CPU-scale study of experiments/study.py: every query, random too, under every strategy.
    "cifar_cpu": dict(tiers=[grid(["sr", "coreset", "mcdropout", "random"])], extra=[], preset="cifar_cpu"),
    # The plateau study of experiments/study.py (its README declares the plan): iNAS vs fixed A(2,4), then
    # A(1,2), under random and sr on seeds 0-2; the replication of the architecture comparison under random
    # on seeds 3-7; the query family on fixed A(1,2), seeds 0-2.
    "cifar_plateau": dict(tiers=[([("inas", None, "random"), ("fixed", "2,4", "random"), ("inas", None, "sr"),
                                   ("fixed", "2,4", "sr")], [0, 1, 2]),
                                 ([("fixed", "1,2", "random"), ("fixed", "1,2", "sr")], [0, 1, 2]),
                                 ([("inas", None, "random"), ("fixed", "2,4", "random"), ("fixed", "1,2", "random")],
                                  [3, 4, 5, 6, 7]),
                                 ([("fixed", "1,2", q) for q in ("coreset", "mcdropout", "typiclust", "badge")],
                                  [0, 1, 2])],
                          extra=[], preset="cifar_plateau"),
    "sener": dict(tiers=[grid(["sr", "mcdropout", "coreset"])],
                  extra=["--initial_size=5000", "--query_sizes=5000,5000,5000,30000", "--budget=50000"]),
    "longtail": dict(tiers=[[("longtail", None, "coreset")]],
                     extra=["--initial_size=25000", "--query_sizes=5000", "--budget=50000"]),
}


def tiers(experiment: str, seeds: list[int] | None) -> list[tuple[list[tuple[str, str | None, str]], list[int]]]:
    """(runs, seeds) of each tier of `experiment`: a declared tier's seeds (those among `seeds` when
    given), or `seeds` (default [0]) for a tier without."""
    out = []
    for tier in SETTINGS[experiment]["tiers"]:
        runs, declared = tier if isinstance(tier, tuple) else (tier, None)
        chosen = declared if seeds is None else [s for s in seeds if declared is None or s in declared]
        out.append((runs, chosen if chosen is not None else [0]))
    return out


def commands(experiment: str, dataset: str, seeds: list[int] | None, data_dir: str | None) -> list[list[str]]:
    """The driver command of every run of `experiment`: tier by tier, each tier for every seed before the
    next (so the runs that matter most finish first)."""
    setting = SETTINGS[experiment]
    out = []
    for runs, tier_seeds in tiers(experiment, seeds):
        for seed, (strategy, arch, query) in itertools.product(tier_seeds, runs):
            name = run_name(from_preset(setting.get("preset", "paper"), dataset, strategy=strategy, query=query,
                                        seed=seed, **({"arch": arch} if arch else {})))
            cmd = [sys.executable, "-m", "inas_jax.main", f"--preset={setting.get('preset', 'paper')}",
                   f"--dataset={dataset}",
                   f"--query={query}", f"--strategy={strategy}", f"--seed={seed}",
                   f"--workdir=runs/{experiment}/{name}", *setting["extra"]]
            if arch:
                cmd.append(f"--arch={arch}")
            if data_dir:
                cmd.append(f"--data_dir={data_dir}")
            out.append(cmd)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=sorted(SETTINGS))
    parser.add_argument("--dataset", default="cifar10", help="cifar10 | cifar100 | svhn | npz:PATH")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds (default: a study's declared seeds, else 0)")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--run", action="store_true", help="run the commands in turn instead of printing them")
    args = parser.parse_args()
    cmds = commands(args.experiment, args.dataset, None if args.seeds is None else [int(s) for s in args.seeds.split(",")], args.data_dir)
    for cmd in cmds:
        print(shlex.join(cmd), flush=True)
        if args.run and subprocess.run(cmd).returncode != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
