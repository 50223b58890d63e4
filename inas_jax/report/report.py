"""python -m inas_jax.report --out=DIR RUN [RUN ...]: learning curves and architectures from results.json.

RUN is a workdir, a results.json, or a glob of either. Runs with the same dataset, strategy (iNAS or
the fixed architecture) and query are seeds of one curve, drawn as mean +- sample std (ddof=1) over seeds.

Input is checked before anything is written; a violation prints one `error:` line, exit status 2:
  - every results.json is a JSON object with a config (dataset, strategy, query, seed, arch) and a
    list of round records (num_labelled rising, test_accuracy in [0, 1]; arch and num_params for iNAS);
  - --out, if it exists, is a directory;
  - the seeds of one curve share every other setting: runs whose configs differ in anything but the
    seed (say train.width) are refused, naming the setting, not averaged; report them separately.
    Two files with the same config and seed (a copied run) are refused too.
A file reached twice (a workdir and its results.json, a symlink) counts once, by its real path. A
curve whose seeds completed different numbers of rounds is drawn over the rounds all completed, with
a warning on stderr naming each run's count. Writes:
  curves_<strategy>.png   test accuracy vs labels, one line per query
  compare_<query>.png     the same query under every strategy
  architectures.png       the architecture iNAS chose per round (blocks x stacks and parameters)
  compute.png             test accuracy against cumulative CPU hours (runs that record cpu_seconds)
  summary.md              area under each learning curve (mean accuracy over the label range) and final accuracy;
                          accuracy at each label count (with --reference rows); AUC differences
                          paired by seed (query - random, iNAS - fixed) with 95% paired-t intervals,
                          a finding only where the interval excludes 0; CPU hours per phase and
                          iNAS's cost as a multiple of the fixed runs'; iNAS's architecture in every
                          round of every run
"""
from __future__ import annotations

import collections
import glob
import json
import math
import os
import sys

import numpy as np

from inas_jax.loop.round import PHASES
from inas_jax.config import STRATEGIES, dataset_label, with_legacy_settings
from inas_jax.model.search_space import Arch


class ReportError(ValueError):
    """The report's input is unusable; the message is one line naming the file or flag."""


def load_runs(patterns: list[str]) -> list[dict]:
    """Checked results.json contents of every run found, each with the key 'path' added.

    Unfinished runs are included, runs without a completed round skipped; a file reached twice
    (same real path) is read once. Raises ReportError.
    """
    runs, seen = [], set()
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)) or [pattern]:
            file = os.path.join(path, "results.json") if os.path.isdir(path) else path
            if not os.path.isfile(file):
                raise ReportError(f"no results.json at {path!r}")
            real = os.path.realpath(file)
            if real in seen:
                continue
            seen.add(real)
            run = read_results(file)
            if run["rounds"]:
                runs.append(dict(run, path=file))
    return runs


def read_results(file: str) -> dict:
    """One results.json, checked for the fields the report reads; raises ReportError naming the file."""
    try:
        with open(file, encoding="utf-8") as f:
            run = json.load(f)
    except json.JSONDecodeError as err:
        raise ReportError(f"{file}: not valid JSON ({err.msg}: line {err.lineno} column {err.colno}); "
                          "truncated?") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{file}: cannot be read: {err}") from None
    problem = _results_problem(run)
    if problem:
        raise ReportError(f"{file}: {problem}")
    return {**run, "config": with_legacy_settings(run["config"])}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _results_problem(run) -> str | None:
    """What makes `run` unusable as a results.json, or None."""
    if not isinstance(run, dict):
        return f"expected a JSON object with 'config' and 'rounds', found {type(run).__name__}"
    missing = [k for k in ("config", "rounds") if k not in run]
    if missing:
        return f"lacks {' and '.join(map(repr, missing))}: not a results.json of inas_jax.main"
    config, rounds = run["config"], run["rounds"]
    if not isinstance(config, dict):
        return f"config is {type(config).__name__}, expected an object"
    for key, ok, expected in (("dataset", lambda v: isinstance(v, str), "a string"),
                              ("query", lambda v: isinstance(v, str), "a string"),
                              ("strategy", lambda v: v in STRATEGIES, " or ".join(map(repr, STRATEGIES))),
                              ("seed", _is_int, "an integer")):
        if key not in config:
            return f"config lacks {key!r}"
        if not ok(config[key]):
            return f"config has {key}={config[key]!r}: expected {expected}"
    try:
        Arch.from_json(config.get("arch"))
    except ValueError as err:
        return f"config arch: {err}"
    if not isinstance(rounds, list):
        return f"rounds is {type(rounds).__name__}, expected a list of round records"
    needs = ("num_labelled", "test_accuracy") + (("arch", "num_params") if config["strategy"] != "fixed" else ())
    previous = 0
    for i, record in enumerate(rounds, 1):
        if not isinstance(record, dict):
            return f"round {i} is {type(record).__name__}, expected an object"
        lacking = [k for k in needs if k not in record]
        if lacking:
            return f"round {i} lacks {', '.join(map(repr, lacking))}"
        labelled, accuracy = record["num_labelled"], record["test_accuracy"]
        if not _is_int(labelled) or labelled <= previous:
            return f"round {i} has num_labelled={labelled!r}: expected an integer above {previous}"
        previous = labelled
        if not (isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool)
                and math.isfinite(accuracy) and 0 <= accuracy <= 1):
            return f"round {i} has test_accuracy={accuracy!r}: expected a number in [0, 1]"
        if "arch" in needs:
            try:
                Arch.from_json(record["arch"])
            except ValueError as err:
                return f"round {i} arch: {err}"
            if not _is_int(record["num_params"]):
                return f"round {i} has num_params={record['num_params']!r}: expected an integer"
    return None


def strategy_name(config: dict) -> str:
    """iNAS, long tail (architecture chosen once, on the passive initial set) or the fixed A(i,j)."""
    names = {"inas": "iNAS", "longtail": "long tail"}
    return names.get(config["strategy"]) or str(Arch.from_json(config["arch"]))


def _settings(config: dict, prefix: str = "") -> dict:
    """config flattened to {dotted name: value}, without the seed."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_settings(value, f"{prefix}{key}."))
        elif f"{prefix}{key}" != "seed":
            out[f"{prefix}{key}"] = value
    return out


def group_runs(runs: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """{(dataset, strategy, query): [runs of different seeds]}.

    Raises ReportError when two runs of a group differ in a setting other than the seed, or share it.
    """
    groups = collections.defaultdict(list)
    for run in runs:
        c = run["config"]
        key = (dataset_label(c["dataset"]), strategy_name(c), c["query"])
        for other in groups[key]:
            _check_seeds_of_one_curve(other, run, key)
        groups[key].append(run)
    return dict(groups)


def _check_seeds_of_one_curve(a: dict, b: dict, key: tuple[str, str, str]) -> None:
    curve_name = " ".join(key)
    sa, sb = _settings(a["config"]), _settings(b["config"])
    differ = [f"{k}: {_shown(sa, k)} vs {_shown(sb, k)}" for k in sorted(set(sa) | set(sb))
              if k not in sa or k not in sb or sa[k] != sb[k]]
    if differ:
        raise ReportError(f"{a['path']} and {b['path']} would be seeds of one curve ({curve_name}) but differ in "
                          f"{'; '.join(differ)}: only the seed may differ; report them separately")
    if a["config"]["seed"] == b["config"]["seed"]:
        raise ReportError(f"{a['path']} and {b['path']} are the same run ({curve_name}, seed "
                          f"{a['config']['seed']}): give each run once")


def _shown(settings: dict, key: str) -> str:
    return repr(settings[key]) if key in settings else "absent"


def uneven_rounds(groups) -> list[str]:
    """One warning per curve whose seeds completed different numbers of rounds, naming each run's count."""
    out = []
    for key, runs in sorted(groups.items()):
        counts = [len(run["rounds"]) for run in runs]
        if len(set(counts)) > 1:
            listed = ", ".join(f"{run['path']}: {n}" for run, n in zip(runs, counts))
            out.append(f"{' '.join(key)}: seeds completed different numbers of rounds ({listed}); "
                       f"its curve and tables use the first {min(counts)}")
    return out


# Two-sided 95% quantiles of Student's t with df = 1..30 degrees of freedom (normal beyond).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def sample_std(values, axis=0) -> np.ndarray:
    """Standard deviation over seeds with ddof=1 (the sample's); 0 for a single seed."""
    values = np.asarray(values, float)
    return values.std(axis, ddof=1) if values.shape[axis] > 1 else np.zeros(np.delete(values.shape, axis))


def t_interval(diffs) -> tuple[float, float] | None:
    """95% paired-t interval of the mean of per-seed differences; None for fewer than two seeds."""
    n = len(diffs)
    if n < 2:
        return None
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * float(np.std(diffs, ddof=1)) / math.sqrt(n)
    return float(np.mean(diffs)) - half, float(np.mean(diffs)) + half


def _mean_sd(values) -> str:
    return f"{np.mean(values):.4f} +- {float(sample_std(values)):.4f}" if len(values) > 1 else \
        f"{np.mean(values):.4f} (one seed)"


def curve(runs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels (R,), mean accuracy (R,), sample std (R,)) over seeds, on the rounds every seed completed."""
    n = min(len(r["rounds"]) for r in runs)
    labels = np.array([r["num_labelled"] for r in runs[0]["rounds"][:n]])
    acc = np.array([[r["test_accuracy"] for r in run["rounds"][:n]] for run in runs])
    return labels, acc.mean(0), sample_std(acc)


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
    rows = ["| dataset | strategy | query | seeds | labels | AUC (mean +- sd) | final accuracy (mean +- sd) |",
            "|---|---|---|---|---|---|---|"]
    for (dataset, strategy, query), runs in sorted(groups.items()):
        labels, _, _ = curve(runs)
        aucs = [run_auc(run, len(labels)) for run in runs]
        finals = [run["rounds"][len(labels) - 1]["test_accuracy"] for run in runs]
        rows.append(f"| {dataset} | {strategy} | {query} | {len(runs)} | {labels[0]}-{labels[-1]} | "
                    f"{_mean_sd(aucs)} | {_mean_sd(finals)} |")
    return "\n".join(rows) + "\n"


def accuracy_table(groups, references: dict[str, dict[int, float]] | None = None) -> str:
    """Test accuracy (mean +- sd over seeds) of every curve at each labelled-set size, with
    `references` (name -> {labels: accuracy}, e.g. published baselines) as extra rows."""
    labels = sorted({r["num_labelled"] for runs in groups.values() for run in runs for r in run["rounds"]})
    rows = ["| dataset | strategy | query | seeds | " + " | ".join(f"{n:,}" for n in labels) + " |",
            "|---|---|---|---|" + "---|" * len(labels)]
    for (dataset, strategy, query), runs in sorted(groups.items()):
        at, mean, sd = curve(runs)
        cells = {int(n): (f"{m:.3f} +- {d:.3f}" if len(runs) > 1 else f"{m:.3f}") for n, m, d in zip(at, mean, sd)}
        rows.append(f"| {dataset} | {strategy} | {query} | {len(runs)} | "
                    + " | ".join(cells.get(n, "") for n in labels) + " |")
    notes = []
    for name, values in (references or {}).items():
        rows.append(f"| {name} | | | | " + " | ".join(f"{values[n]:.3f}" if n in values else "" for n in labels)
                    + " |")
        elsewhere = [f"{n:,}: {a:.3f}" for n, a in sorted(values.items()) if n not in labels]
        if elsewhere:
            notes.append(f"{name} at label counts the runs do not have: {', '.join(elsewhere)}.")
    return "\n".join(rows) + "\n" + "".join(f"\n{note}\n" for note in notes)


def round_cpu_hours(run: dict, rounds: int) -> np.ndarray | None:
    """CPU hours (all threads) of each phase (PHASES) in each of the first `rounds` rounds, (rounds, 3);
    None when a round lacks cpu_seconds (runs recorded before they were)."""
    done = run["rounds"][:rounds]
    if not all("cpu_seconds" in r for r in done):
        return None
    return np.array([[r["cpu_seconds"].get(p, 0.0) / 3600 for p in PHASES] for r in done])


def _inas_vs_fixed(groups):
    """(dataset, query, fixed strategy, iNAS runs, fixed runs) for every fixed architecture run with
    the same dataset and query as an iNAS curve."""
    for (dataset, strategy, query), runs in sorted(groups.items()):
        if strategy == "iNAS":
            for (d2, other, q2), fixed in sorted(groups.items()):
                if d2 == dataset and q2 == query and other != "iNAS":
                    yield dataset, query, other, runs, fixed


def _seed_pairs(runs_a: list[dict], runs_b: list[dict]) -> list[tuple[dict, dict, int]]:
    """(run a, run b, rounds both completed) for every seed both lists have, by seed."""
    a = {run["config"]["seed"]: run for run in runs_a}
    b = {run["config"]["seed"]: run for run in runs_b}
    return [(a[s], b[s], min(len(a[s]["rounds"]), len(b[s]["rounds"]))) for s in sorted(set(a) & set(b))]


def cost_table(groups) -> str:
    """Mean CPU hours per run in search, final training and queries, and iNAS's total as a multiple of
    each fixed architecture's under the same query (per-seed ratios, mean +- sd)."""
    rows = ["| dataset | strategy | query | seeds | search h | train h | query h | total h | total vs fixed |",
            "|---|---|---|---|---|---|---|---|---|"]
    ratios = collections.defaultdict(list)
    for dataset, query, other, inas, fixed in _inas_vs_fixed(groups):
        per_seed = []
        for a, b, rounds in _seed_pairs(inas, fixed):
            ha, hb = round_cpu_hours(a, rounds), round_cpu_hours(b, rounds)
            if ha is not None and hb is not None:
                per_seed.append(ha.sum() / hb.sum())
        if per_seed:
            spread = f" +- {float(sample_std(per_seed)):.2f}" if len(per_seed) > 1 else ""
            ratios[(dataset, "iNAS", query)].append(f"{np.mean(per_seed):.2f}x{spread} {other}")
    for key, runs in sorted(groups.items()):
        n = min(len(r["rounds"]) for r in runs)
        hours = [h.sum(0) for h in (round_cpu_hours(run, n) for run in runs) if h is not None]
        if not hours:
            continue
        search, train, query = np.mean(hours, 0)
        rows.append(f"| {' | '.join(key)} | {len(hours)} | {search:.2f} | {train:.2f} | {query:.3f} | "
                    f"{search + train + query:.2f} | {'; '.join(ratios[key])} |")
    return "\n".join(rows) + "\n" if len(rows) > 2 else ""


def paired_table(groups) -> str:
    """AUC differences between runs that share a seed (so the same initial labelled set): each active
    query minus random under the same strategy, and iNAS minus each fixed architecture under the same
    query. Pairing removes the between-seed variation that the per-curve std above includes."""
    pairs = []
    for (dataset, strategy, query), runs in sorted(groups.items()):
        if query != "random" and (dataset, strategy, "random") in groups:
            pairs.append((dataset, f"{strategy}: {query} - random", runs, groups[(dataset, strategy, "random")]))
    for dataset, query, other, inas, fixed in _inas_vs_fixed(groups):
        pairs.append((dataset, f"{query}: iNAS - {other}", inas, fixed))
    rows = ["| dataset | comparison | seeds | AUC difference (mean +- sd) | 95% interval (paired t) | finding | "
            "per seed |", "|---|---|---|---|---|---|---|"]
    for dataset, name, runs_a, runs_b in pairs:
        diffs = [run_auc(a, n) - run_auc(b, n) for a, b, n in _seed_pairs(runs_a, runs_b)]
        if not diffs:
            continue
        interval = t_interval(diffs)
        if interval is None:
            shown, finding = "n/a", "one seed: no interval"
        else:
            shown = f"[{interval[0]:+.4f}, {interval[1]:+.4f}]"
            first, second = name.split(": ", 1)[1].split(" - ")
            finding = (f"{first} better" if interval[0] > 0 else f"{second} better" if interval[1] < 0
                       else "inconclusive")
        rows.append(f"| {dataset} | {name} | {len(diffs)} | {np.mean(diffs):+.4f} +- {float(sample_std(diffs)):.4f} | "
                    f"{shown} | {finding} | " + ", ".join(f"{d:+.4f}" for d in diffs) + " |")
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
            chosen = {r["num_labelled"]: str(Arch.from_json(r["arch"])) for r in run["rounds"]}
            rows.append(f"| {dataset} | {query} | {run['config']['seed']} | "
                        + " | ".join(chosen.get(n, "") for n in labels) + " |")
    return "\n".join(rows) + "\n"


def _plot_lines(ax, items, title, references: dict[str, dict[int, float]] | None = None):
    """Mean +- sd curves of each (name, runs) in `items`, and references (name -> {labels: accuracy})
    as dashed grey lines."""
    for name, runs in items:
        labels, mean, std = curve(runs)
        ax.plot(labels, mean, marker="o", ms=3, label=f"{name} (n={len(runs)})")
        ax.fill_between(labels, mean - std, mean + std, alpha=0.2)
    for name, values in (references or {}).items():
        points = sorted(values.items())
        ax.plot([n for n, _ in points], [a for _, a in points], "--", color="grey", marker="x", ms=4, label=name)
    ax.set(xlabel="labelled points", ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()


def _file_part(value: str) -> str:
    """A strategy or query as part of a file name: A(2,4) -> A2x4, others unchanged."""
    return "A" + Arch.parse(value).slug if value.startswith("A(") else value


def _save(fig, out: str, name: str) -> str:
    """Writes a matplotlib figure to out/name, closes it, returns the path."""
    import matplotlib.pyplot as plt
    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cumulative_cpu_hours(runs: list[dict]) -> np.ndarray | None:
    """Mean over seeds of the CPU hours spent up to and including each round's query (R,), on the
    rounds every seed completed; None when a run lacks cpu_seconds."""
    n = min(len(r["rounds"]) for r in runs)
    hours = [round_cpu_hours(run, n) for run in runs]
    if any(h is None for h in hours):
        return None
    return np.mean([np.cumsum(h.sum(1)) for h in hours], 0)


def write_report(runs: list[dict], out: str, references: dict[str, dict[int, float]] | None = None) -> list[str]:
    """Writes the PNGs and summary.md into `out`; returns the paths written. references: extra rows
    of the accuracy table and dashed lines of the accuracy plots (name -> {labels: accuracy})."""
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
                _plot_lines(ax, items, f"{dataset}: {value}", references)
            written.append(_save(fig, out, f"{prefix}_{_file_part(value)}.png"))
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
                        ax1.annotate(str(Arch.from_json(r["arch"])), (x, y), fontsize=7, alpha=0.7)
                ax2.plot(labels, [r["num_params"] for r in run["rounds"]], marker="o", ms=3, alpha=0.8, label=name)
        ax1.set(xlabel="labelled points", ylabel="total blocks (blocks x stacks)", title="architecture chosen by iNAS")
        ax2.set(xlabel="labelled points", ylabel="trainable parameters", yscale="log", title="model size")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
        ax2.legend(fontsize=7)
        written.append(_save(fig, out, "architectures.png"))
    costed = [(k, v, cumulative_cpu_hours(v)) for k, v in sorted(groups.items())]
    costed = [c for c in costed if c[2] is not None]
    if costed:
        fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
        for ax, dataset in zip(axes[0], datasets):
            for (d, strategy, query), group, hours in costed:
                if d == dataset:
                    ax.plot(hours, curve(group)[1], marker="o", ms=3, label=f"{strategy} {query} (n={len(group)})")
            ax.set(xlabel="cumulative CPU hours (search + training + queries)", ylabel="test accuracy",
                   title=f"{dataset}: accuracy against compute")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        written.append(_save(fig, out, "compute.png"))
    path = os.path.join(out, "summary.md")
    with open(path, "w") as f:
        f.write(summary_table(groups))
        f.write("\nTest accuracy at each labelled-set size (mean +- sd over seeds, ddof=1):\n\n")
        f.write(accuracy_table(groups, references))
        f.write("\nAUC differences paired by seed (same initial labelled set), over the rounds both runs completed; "
                "a finding only where the 95% interval excludes 0:\n\n")
        f.write(paired_table(groups))
        costs = cost_table(groups)
        if costs:
            f.write("\nCompute per run (CPU hours, all threads; mean over seeds):\n\n" + costs)
        architectures = architecture_table(groups)
        if architectures:
            f.write("\nArchitecture iNAS trained in each round (columns: labelled points):\n\n" + architectures)
    written.append(path)
    return written


def parse_reference(text: str) -> tuple[str, dict[int, float]]:
    """'ResNet-18=1000:0.47,2000:0.58' -> ('ResNet-18', {1000: 0.47, 2000: 0.58})."""
    name, _, values = text.rpartition("=")
    try:
        points = {int(n): float(a) for n, a in (item.split(":") for item in values.split(","))}
    except ValueError:
        points = {}
    if not name or not points:
        raise ReportError(f"--reference={text!r}: expected NAME=LABELS:ACCURACY,... e.g. ResNet-18=1000:0.47")
    return name, points


def main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m inas_jax.report", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="workdirs, results.json files, or globs of them")
    parser.add_argument("--out", default="report", help="output directory")
    parser.add_argument("--reference", action="append", default=[],
                        help="NAME=LABELS:ACCURACY,... an extra row of the accuracy table (e.g. a published "
                             "baseline); repeatable")
    args = parser.parse_args(argv)
    try:
        references = dict(parse_reference(text) for text in args.reference)
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise ReportError(f"--out={args.out!r} exists and is not a directory")
        runs = load_runs(args.runs)
        if not runs:
            raise ReportError("no run has a completed round")
        groups = group_runs(runs)
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as err:
            raise ReportError(f"--out={args.out!r} cannot be created: {err.strerror}") from None
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for warning in uneven_rounds(groups):
        print(f"warning: {warning}", file=sys.stderr)
    for path in write_report(runs, args.out, references):
        print(path)
    return 0


def run() -> None:
    """The console entry point `inas-jax-report`."""
    sys.exit(main(sys.argv[1:]))
