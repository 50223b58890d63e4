"""python -m inas_jax.report --out=DIR RUN [RUN ...]: learning curves and architectures from results.json.

RUN is a workdir, a results.json, or a glob of either. Runs with the same dataset, strategy (iNAS or
the fixed architecture) and query are seeds of one curve, drawn as mean +- std over seeds. Writes:
  curves_<strategy>.png   test accuracy vs labels, one line per query
  compare_<query>.png     the same query under every strategy
  architectures.png       the architecture iNAS chose per round (blocks x stacks and parameters)
  summary.md              area under each learning curve (mean accuracy over the label range) and final accuracy;
                          AUC differences paired by seed (query - random, iNAS - fixed); iNAS's
                          architecture in every round of every run
"""
from __future__ import annotations

import collections
import glob
import json
import os
import sys

import numpy as np

from inas_jax.config import dataset_label


def load_runs(patterns: list[str]) -> list[dict]:
    """results.json contents of every run found, each with the key 'path' added; unfinished runs too."""
    runs = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)) or [pattern]:
            file = os.path.join(path, "results.json") if os.path.isdir(path) else path
            if not os.path.isfile(file):
                raise FileNotFoundError(f"no results.json at {path!r}")
            with open(file) as f:
                run = json.load(f)
            if run["rounds"]:
                runs.append(dict(run, path=file))
    return runs


def strategy_name(config: dict) -> str:
    return "iNAS" if config["strategy"] == "inas" else "A(%d,%d)" % tuple(config["arch"])


def group_runs(runs: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """{(dataset, strategy, query): [runs of different seeds]}."""
    groups = collections.defaultdict(list)
    for run in runs:
        c = run["config"]
        groups[(dataset_label(c["dataset"]), strategy_name(c), c["query"])].append(run)
    return dict(groups)


def curve(runs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels (R,), mean accuracy (R,), std (R,)) over seeds, on the rounds every seed completed."""
    n = min(len(r["rounds"]) for r in runs)
    labels = np.array([r["num_labelled"] for r in runs[0]["rounds"][:n]])
    acc = np.array([[r["test_accuracy"] for r in run["rounds"][:n]] for run in runs])
    return labels, acc.mean(0), acc.std(0)


def area_under_curve(labels: np.ndarray, accuracy: np.ndarray) -> float:
    """Mean accuracy over the label range: trapezoidal area / (last - first labels); one point = itself."""
    if len(labels) < 2:
        return float(accuracy[0])
    return float(np.sum((accuracy[1:] + accuracy[:-1]) / 2 * np.diff(labels)) / (labels[-1] - labels[0]))


def run_auc(run: dict, rounds: int) -> float:
    """area_under_curve of one run's first `rounds` rounds."""
    done = run["rounds"][:rounds]
    return area_under_curve(np.array([r["num_labelled"] for r in done]), np.array([r["test_accuracy"] for r in done]))


def summary_table(groups) -> str:
    rows = ["| dataset | strategy | query | seeds | labels | AUC (mean +- std) | final accuracy (mean +- std) |",
            "|---|---|---|---|---|---|---|"]
    for (dataset, strategy, query), runs in sorted(groups.items()):
        labels, _, _ = curve(runs)
        aucs = [run_auc(run, len(labels)) for run in runs]
        finals = [run["rounds"][len(labels) - 1]["test_accuracy"] for run in runs]
        rows.append(f"| {dataset} | {strategy} | {query} | {len(runs)} | {labels[0]}-{labels[-1]} | "
                    f"{np.mean(aucs):.4f} +- {np.std(aucs):.4f} | {np.mean(finals):.4f} +- {np.std(finals):.4f} |")
    return "\n".join(rows) + "\n"


def paired_table(groups) -> str:
    """AUC differences between runs that share a seed (so the same initial labelled set): each active
    query minus random under the same strategy, and iNAS minus each fixed architecture under the same
    query. Pairing removes the between-seed variation that the per-curve std above includes."""
    def by_seed(runs):
        return {run["config"]["seed"]: run for run in runs}

    pairs = []
    for (dataset, strategy, query), runs in sorted(groups.items()):
        if query != "random" and (dataset, strategy, "random") in groups:
            pairs.append((dataset, f"{strategy}: {query} - random", runs, groups[(dataset, strategy, "random")]))
    for (dataset, strategy, query), runs in sorted(groups.items()):
        if strategy == "iNAS":
            for (d2, other, q2), fixed in sorted(groups.items()):
                if d2 == dataset and q2 == query and other != "iNAS":
                    pairs.append((dataset, f"{query}: iNAS - {other}", runs, fixed))
    rows = ["| dataset | comparison | seeds | AUC difference (mean +- std) | per seed |", "|---|---|---|---|---|"]
    for dataset, name, runs_a, runs_b in pairs:
        a, b = by_seed(runs_a), by_seed(runs_b)
        seeds = sorted(set(a) & set(b))
        if not seeds:
            continue
        diffs = []
        for seed in seeds:
            n = min(len(a[seed]["rounds"]), len(b[seed]["rounds"]))
            diffs.append(run_auc(a[seed], n) - run_auc(b[seed], n))
        rows.append(f"| {dataset} | {name} | {len(seeds)} | {np.mean(diffs):+.4f} +- {np.std(diffs):.4f} | "
                    + ", ".join(f"{d:+.4f}" for d in diffs) + " |")
    return "\n".join(rows) + "\n"


def architecture_table(groups) -> str:
    """The architecture iNAS trained in each round of each run, one row per (dataset, query, seed)."""
    inas = sorted((k, v) for k, v in groups.items() if k[1] == "iNAS")
    if not inas:
        return ""
    labels = sorted({r["num_labelled"] for _, runs in inas for run in runs for r in run["rounds"]})
    rows = ["| dataset | query | seed | " + " | ".join(str(n) for n in labels) + " |",
            "|---|---|---|" + "---|" * len(labels)]
    for (dataset, _, query), runs in inas:
        for run in sorted(runs, key=lambda r: r["config"]["seed"]):
            chosen = {r["num_labelled"]: "A(%d,%d)" % tuple(r["arch"]) for r in run["rounds"]}
            rows.append(f"| {dataset} | {query} | {run['config']['seed']} | "
                        + " | ".join(chosen.get(n, "") for n in labels) + " |")
    return "\n".join(rows) + "\n"


def _plot_lines(ax, items, title):
    for name, runs in items:
        labels, mean, std = curve(runs)
        ax.plot(labels, mean, marker="o", ms=3, label=f"{name} (n={len(runs)})")
        ax.fill_between(labels, mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="labelled points", ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()


def write_report(runs: list[dict], out: str) -> list[str]:
    """Writes the PNGs and summary.md into `out`; returns the paths written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    groups = group_runs(runs)
    written = []
    datasets = sorted({k[0] for k in groups})
    for key_index, prefix in ((1, "curves"), (2, "compare")):
        for value in sorted({k[key_index] for k in groups}):
            fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
            for ax, dataset in zip(axes[0], datasets):
                items = sorted((k[3 - key_index], v) for k, v in groups.items()
                               if k[0] == dataset and k[key_index] == value)
                _plot_lines(ax, items, f"{dataset}: {value}")
            path = os.path.join(out, f"{prefix}_{value.replace('(', '').replace(')', '').replace(',', 'x')}.png")
            fig.tight_layout()
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    inas = [(k, v) for k, v in sorted(groups.items()) if k[1] == "iNAS"]
    if inas:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for (dataset, _, query), runs in inas:
            for i, run in enumerate(runs):
                labels = [r["num_labelled"] for r in run["rounds"]]
                blocks = [r["arch"][0] * r["arch"][1] for r in run["rounds"]]
                name = f"{dataset} {query} seed {run['config']['seed']}"
                ax1.plot(labels, blocks, marker="o", ms=3, alpha=0.8, label=name)
                if i == 0:  # one seed's names keep the panel readable; summary.md lists every run's
                    for x, y, r in zip(labels, blocks, run["rounds"]):
                        ax1.annotate("A(%d,%d)" % tuple(r["arch"]), (x, y), fontsize=7, alpha=0.7)
                ax2.plot(labels, [r["num_params"] for r in run["rounds"]], marker="o", ms=3, alpha=0.8, label=name)
        ax1.set(xlabel="labelled points", ylabel="total blocks (blocks x stacks)", title="architecture chosen by iNAS")
        ax2.set(xlabel="labelled points", ylabel="trainable parameters", yscale="log", title="model size")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
        ax2.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out, "architectures.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    path = os.path.join(out, "summary.md")
    with open(path, "w") as f:
        f.write(summary_table(groups))
        f.write("\nPaired by seed (same initial labelled set), over the rounds both runs completed:\n\n")
        f.write(paired_table(groups))
        architectures = architecture_table(groups)
        if architectures:
            f.write("\nArchitecture iNAS trained in each round (columns: labelled points):\n\n" + architectures)
    written.append(path)
    return written


def main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m inas_jax.report", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="workdirs, results.json files, or globs of them")
    parser.add_argument("--out", default="report", help="output directory")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs)
    except (FileNotFoundError, json.JSONDecodeError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not runs:
        print("error: no run has a completed round", file=sys.stderr)
        return 2
    for path in write_report(runs, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
