"""The Markdown tables of summary.md: AUC and final accuracy per curve, accuracy per label count, AUC
differences paired by seed, CPU hours, and the architectures iNAS chose. Each value is rounded once,
where it is printed."""
from __future__ import annotations

import numpy as np

from inas_jax.model.search_space import Arch
from inas_jax.report import statistics as st


def table(header: list[str], rows: list[list[str] | str]) -> str:
    """A Markdown table, one line per row (a list of cells, or a line already made) and a newline at the end."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + [row if isinstance(row, str) else "| " + " | ".join(row) + " |" for row in rows]) + "\n"


def points(value: float, digits: int = 1) -> str:
    """A fraction as signed points (x 100): 0.0215 -> '+2.1'."""
    return f"{100 * value:+.{digits}f}"


def mean_sd(values, digits: int = 4) -> str:
    """'mean +- sample sd' of the values, or 'mean (one seed)'."""
    if len(values) > 1:
        return f"{np.mean(values):.{digits}f} +- {float(st.sample_std(values)):.{digits}f}"
    return f"{np.mean(values):.{digits}f} (one seed)"


def label_counts(runs) -> list[int]:
    """Every labelled-set size any round of `runs` reached, in order."""
    return sorted({r["num_labelled"] for run in runs for r in run["rounds"]})


def summary_table(groups) -> str:
    rows = []
    for (dataset, strategy, query), runs in sorted(groups.items()):
        labels, _, _ = st.curve(runs)
        aucs = [st.run_auc(run, len(labels)) for run in runs]
        finals = [run["rounds"][len(labels) - 1]["test_accuracy"] for run in runs]
        rows.append([dataset, strategy, query, str(len(runs)), f"{labels[0]}-{labels[-1]}", mean_sd(aucs),
                     mean_sd(finals)])
    return table(["dataset", "strategy", "query", "seeds", "labels", "AUC (mean +- sd)",
                  "final accuracy (mean +- sd)"], rows)


def accuracy_table(groups, references: dict[str, dict[int, float]] | None = None) -> str:
    """Test accuracy (mean +- sd over seeds) of every curve at each labelled-set size, with
    `references` (name -> {labels: accuracy}, e.g. published baselines) as extra rows."""
    labels = label_counts([run for runs in groups.values() for run in runs])
    rows, notes = [], []
    for (dataset, strategy, query), runs in sorted(groups.items()):
        at, mean, sd = st.curve(runs)
        cells = {int(n): (f"{m:.3f} +- {d:.3f}" if len(runs) > 1 else f"{m:.3f}") for n, m, d in zip(at, mean, sd)}
        rows.append([dataset, strategy, query, str(len(runs))] + [cells.get(n, "") for n in labels])
    for name, values in (references or {}).items():
        rows.append(f"| {name} | | | | " + " | ".join(f"{values[n]:.3f}" if n in values else "" for n in labels) + " |")
        elsewhere = [f"{n:,}: {a:.3f}" for n, a in sorted(values.items()) if n not in labels]
        if elsewhere:
            notes.append(f"{name} at label counts the runs do not have: {', '.join(elsewhere)}.")
    text = table(["dataset", "strategy", "query", "seeds"] + [f"{n:,}" for n in labels], rows)
    return text + "".join(f"\n{note}\n" for note in notes)


def cost_table(groups) -> str:
    """Mean CPU hours per run in search, final training and queries, and iNAS's total as a multiple of
    each fixed architecture's under the same query (per-seed ratios, mean +- sd)."""
    ratios = {}
    for dataset, query, other, inas, fixed in st.inas_vs_fixed(groups):
        per_seed = [ratio for _, ratio in st.cost_ratios(inas, fixed)]
        if per_seed:
            spread = f" +- {float(st.sample_std(per_seed)):.2f}" if len(per_seed) > 1 else ""
            ratios.setdefault((dataset, "iNAS", query), []).append(f"{np.mean(per_seed):.2f}x{spread} {other}")
    rows = []
    for key, runs in sorted(groups.items()):
        hours = st.phase_hours(runs)
        if hours:
            search, train, query = np.mean(hours, 0)
            rows.append([*key, str(len(hours)), f"{search:.2f}", f"{train:.2f}", f"{query:.3f}",
                         f"{search + train + query:.2f}", "; ".join(ratios.get(key, []))])
    header = ["dataset", "strategy", "query", "seeds", "search h", "train h", "query h", "total h", "total vs fixed"]
    return table(header, rows) if rows else ""


def paired_table(groups) -> str:
    """AUC differences between runs that share a seed (so the same initial labelled set): each active
    query minus random under the same strategy, and iNAS minus each fixed architecture under the same
    query. Pairing removes the between-seed variation that the per-curve std above includes."""
    rows = []
    for c, pairs in st.paired_aucs(groups):
        diffs = [d for _, d in pairs]
        interval = st.t_interval(diffs)
        shown = "n/a" if interval is None else f"[{interval[0]:+.4f}, {interval[1]:+.4f}]"
        rows.append([c.dataset, c.name, str(len(diffs)), f"{np.mean(diffs):+.4f} +- {float(st.sample_std(diffs)):.4f}",
                     shown, st.finding(c, interval), ", ".join(f"{d:+.4f}" for d in diffs)])
    return table(["dataset", "comparison", "seeds", "AUC difference (mean +- sd)", "95% interval (paired t)",
                  "finding", "per seed"], rows)


def architecture_table(groups) -> str:
    """The architecture iNAS trained in each round of each run, one row per (dataset, query, seed)."""
    inas = sorted((k, v) for k, v in groups.items() if k[1] == "iNAS")
    if not inas:
        return ""
    labels = label_counts([run for _, runs in inas for run in runs])
    rows = []
    for (dataset, _, query), runs in inas:
        for run in sorted(runs, key=lambda r: r["config"]["seed"]):
            chosen = {r["num_labelled"]: str(Arch.from_json(r["arch"])) for r in run["rounds"]}
            rows.append([dataset, query, str(run["config"]["seed"])] + [chosen.get(n, "") for n in labels])
    return table(["dataset", "query", "seed"] + [str(n) for n in labels], rows)


def summary_text(groups, references: dict[str, dict[int, float]] | None = None) -> str:
    """The text of summary.md."""
    text = (summary_table(groups)
            + "\nTest accuracy at each labelled-set size (mean +- sd over seeds, ddof=1):\n\n"
            + accuracy_table(groups, references)
            + "\nAUC differences paired by seed (same initial labelled set), over the rounds both runs completed; "
              "a finding only where the 95% interval excludes 0:\n\n"
            + paired_table(groups))
    costs = cost_table(groups)
    if costs:
        text += "\nCompute per run (CPU hours, all threads; mean over seeds):\n\n" + costs
    architectures = architecture_table(groups)
    if architectures:
        text += "\nArchitecture iNAS trained in each round (columns: labelled points):\n\n" + architectures
    return text
