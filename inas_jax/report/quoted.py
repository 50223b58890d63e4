"""numbers.md: the numbers a study's text quotes, beyond summary.md's tables, each computed from the run
files and rounded once, where it is printed: AUC differences in points with t, p and the seeds a
finding would need; declared equivalence tests; accuracy differences at each label count; cumulative
CPU hours and cost ratios per seed; parameter counts; every run's rounds; and the run files (sha1) it
was made from, so that the text can cite a generated value instead of re-deriving one."""
from __future__ import annotations

import hashlib
import os

import numpy as np

from inas_jax.model.search_space import Arch
from inas_jax.report import statistics as st
from inas_jax.report.tables import label_counts, points, table

INTRO = """# Numbers from the runs

Generated with summary.md by `python -m inas_jax.report` from the run files listed at the end: every
value here is computed from those files and rounded once, where it is printed, so that text citing
these numbers cannot drift from the runs. Differences are in points (test accuracy x 100) and paired
by seed (both runs of a seed share the initial labelled set).
"""


def _per_seed(pairs: list[tuple[int, float]], shown) -> str:
    return ", ".join(f"{seed}: {shown(value)}" for seed, value in pairs)


def _points_mean_sd(diffs: list[float]) -> str:
    if len(diffs) < 2:
        return f"{points(diffs[0])} (one seed)"
    return f"{points(float(np.mean(diffs)))} +- {100 * float(st.sample_std(diffs)):.1f}"


def _seeds_needed(diffs: list[float]) -> str:
    if len(diffs) < 2:
        return "n/a"
    interval, power = st.seeds_needed(float(np.mean(diffs)), float(st.sample_std(diffs)))
    return ", ".join("over 1,000" if n is None else str(n) for n in (interval, power))


def auc_points_table(groups) -> str:
    """AUC differences in points: mean +- sd, 95% paired-t interval, finding, t, two-sided p, p x K
    (Bonferroni over the K comparisons with an interval), seeds needed, and each seed's difference."""
    paired = st.paired_aucs(groups)
    k = sum(len(pairs) > 1 for _, pairs in paired)
    out = []
    for c, pairs in paired:
        diffs = [d for _, d in pairs]
        interval, test = st.t_interval(diffs), st.paired_t(diffs)
        shown = "n/a" if interval is None else f"[{points(interval[0])}, {points(interval[1])}]"
        t, p = ("n/a", "n/a") if test is None else (f"{test[0]:.1f}", f"{test[1]:.3f}")
        bonferroni = "n/a" if test is None else f"{min(1.0, k * test[1]):.3f}"
        out.append([c.dataset, c.name, str(len(diffs)),
                    _points_mean_sd(diffs), shown,
                    st.finding(c, interval), t, p, bonferroni, _seeds_needed(diffs), _per_seed(pairs, points)])
    return table(["dataset", "comparison", "seeds", "AUC difference, points (mean +- sd)", "95% interval",
                  "finding", "t", "p", f"p x {k}", "seeds needed (interval, 80% power)", "per seed"], out)


def equivalence_table(groups, margins: dict[str, float]) -> str:
    """Declared equivalence tests (TOST) of AUC differences, in points: for each comparison named in
    `margins` (its name -> margin as a fraction), the 90% paired-t interval, the larger one-sided p and
    the verdict: equivalent at 5% where the interval lies inside (-margin, +margin)."""
    out = []
    for c, pairs in st.paired_aucs(groups):
        if c.name not in margins:
            continue
        diffs, margin = [d for _, d in pairs], margins[c.name]
        test = st.equivalence(diffs, margin)
        if test is None:
            cells = ["n/a", "n/a", "one seed: no test"]
        else:
            low, high, p = test
            cells = [f"[{points(low)}, {points(high)}]", f"{p:.3f}",
                     f"equivalent within +-{100 * margin:.1f} points" if p < 0.05 else "not shown equivalent"]
        out.append([c.dataset, c.name, str(len(diffs)), f"+-{100 * margin:.1f}", _points_mean_sd(diffs), *cells])
    return table(["dataset", "comparison", "seeds", "margin, points", "AUC difference, points (mean +- sd)",
                  "90% interval", "p (larger one-sided)", "equivalence at 5%"], out) if out else ""


def accuracy_points_table(groups) -> str:
    """Test accuracy differences in points at each labelled-set size, mean over the paired seeds."""
    diffs = [(c, st.accuracy_differences(c), len(st.seed_pairs(c.runs_a, c.runs_b))) for c in st.comparisons(groups)]
    labels = sorted({n for _, at, _ in diffs for n in at})
    rows = [[c.dataset, c.name, str(seeds)] + [points(at[n]) if n in at else "" for n in labels]
            for c, at, seeds in diffs if at]
    return table(["dataset", "comparison", "seeds"] + [f"{n:,}" for n in labels], rows)


def cumulative_hours_table(groups) -> str:
    """Mean CPU hours spent by each labelled-set size, and the search's share of the total; '' when no
    curve records cpu_seconds."""
    costed = [(key, runs, st.cumulative_cpu_hours(runs)) for key, runs in sorted(groups.items())]
    costed = [c for c in costed if c[2] is not None]
    labels = label_counts([run for _, runs, _ in costed for run in runs])
    rows = []
    for key, runs, hours in costed:
        at = dict(zip(st.curve(runs)[0].tolist(), hours))
        search, train, query = np.mean(st.phase_hours(runs), 0)
        rows.append([*key, str(len(runs))] + [f"{at[n]:.2f}" if n in at else "" for n in labels]
                    + [f"{100 * search / (search + train + query):.0f}%"])
    header = ["dataset", "strategy", "query", "seeds"] + [f"{n:,}" for n in labels] + ["search's share"]
    return table(header, rows) if rows else ""


def cost_ratio_table(groups) -> str:
    """iNAS's total CPU hours as a multiple of each fixed architecture's under the same query, per seed;
    '' when no pair records cpu_seconds."""
    rows = []
    for dataset, query, other, inas, fixed in st.inas_vs_fixed(groups):
        pairs = st.cost_ratios(inas, fixed)
        if pairs:
            ratios = [r for _, r in pairs]
            spread = f" +- {float(st.sample_std(ratios)):.2f}" if len(ratios) > 1 else " (one seed)"
            span = f"{min(ratios):.2f}x-{max(ratios):.2f}x" if len(ratios) > 1 else "n/a"
            rows.append([dataset, f"{query}: iNAS / {other}", str(len(ratios)), f"{np.mean(ratios):.2f}x{spread}",
                         span, _per_seed(pairs, lambda r: f"{r:.2f}x")])
    return table(["dataset", "comparison", "seeds", "mean +- sd", "range", "per seed"], rows) if rows else ""


def _span(span: tuple[int, int]) -> str:
    return f"{span[0]:,}" if span[0] == span[1] else f"{span[0]:,}-{span[1]:,}"


def parameter_table(groups) -> str:
    """The fewest and most parameters of each curve's networks, and each fixed architecture's parameters
    as a multiple of an iNAS curve's (most, then fewest) under the same query; '' when none is recorded."""
    spans = {key: st.parameter_span(runs) for key, runs in sorted(groups.items())}
    multiples: dict[tuple, list[str]] = {}
    for dataset, query, other, _, _ in st.inas_vs_fixed(groups):
        inas, fixed = spans[(dataset, "iNAS", query)], spans[(dataset, other, query)]
        if inas and fixed:
            multiples.setdefault((dataset, "iNAS", query), []).append(
                f"{other}: {fixed[0] / inas[1]:.1f}x-{fixed[1] / inas[0]:.1f}x")
    rows = [[*key, str(len(groups[key])), _span(span), "; ".join(multiples.get(key, []))]
            for key, span in spans.items() if span]
    return table(["dataset", "strategy", "query", "seeds", "parameters (fewest-most, every round)",
                  "a fixed architecture's parameters as a multiple of these"], rows) if rows else ""


def _run_cells(run: dict) -> list[str]:
    """Architectures, parameters, test accuracies and CPU hours of a run's rounds, as table cells."""
    rounds = run["rounds"]
    archs = [str(Arch.from_json(r.get("arch", run["config"]["arch"]))) for r in rounds]
    params = [f"{r['num_params']:,}" if isinstance(r.get("num_params"), int) else "?" for r in rounds]
    if run["config"]["strategy"] == "fixed":
        archs, params = sorted(set(archs)), sorted(set(params))
    hours = st.round_cpu_hours(run, len(rounds))
    spent = "n/a" if hours is None else (f"{hours.sum():.2f} (" + " + ".join(f"{h:.2f}" for h in hours.sum(0)) + ")")
    cpus = sorted({str(r["environment"]["cpu_model"]) for r in rounds
                   if isinstance(r.get("environment"), dict) and "cpu_model" in r["environment"]})
    return [" -> ".join(archs), " / ".join(params), " / ".join(f"{r['test_accuracy']:.3f}" for r in rounds), spent,
            ", ".join(cpus) or "not recorded"]


def runs_table(groups) -> str:
    """Every run: its architectures, parameters, test accuracy per round, CPU hours per phase and the CPU
    models its rounds recorded (XLA:CPU's floats differ between them)."""
    rows = [[*key, str(run["config"]["seed"])] + _run_cells(run)
            for key, runs in sorted(groups.items()) for run in sorted(runs, key=lambda r: r["config"]["seed"])]
    return table(["dataset", "strategy", "query", "seed", "architectures", "parameters", "test accuracy per round",
                  "CPU hours: total (search + train + query)", "CPU"], rows)


def sources_table(runs: list[dict], out: str) -> str:
    """Each run file (relative to `out`) with the first 12 hex digits of its sha1."""
    rows = []
    for run in sorted(runs, key=lambda r: os.path.relpath(r["path"], out)):
        with open(run["path"], "rb") as f:
            rows.append([f"`{os.path.relpath(run['path'], out)}`", hashlib.sha1(f.read()).hexdigest()[:12]])
    return table(["run file", "sha1"], rows)


def numbers_text(groups, runs: list[dict], out: str, margins: dict[str, float] | None = None) -> str:
    """The text of numbers.md; `margins`: the declared equivalence margins (comparison name -> fraction)."""
    sections = [
        ("AUC differences paired by seed, in points", "The 95% paired-t interval; t and its two-sided p with "
         "seeds - 1 degrees of freedom; p x K: Bonferroni over the K comparisons that have an interval; seeds "
         "needed: how many seeds the interval would need to exclude 0, and a two-sided 5% paired t-test to have "
         "80% power, if the per-seed differences kept this mean and sd.", auc_points_table(groups)),
        ("Equivalence tests of AUC differences, in points", "Two one-sided paired t-tests (TOST) at 5% with "
         "seeds - 1 degrees of freedom, against the margin declared for the comparison: equivalent where the 90% "
         "paired-t interval lies inside (-margin, +margin), i.e. both one-sided p-values are below 0.05.",
         equivalence_table(groups, margins or {})),
        ("Test accuracy differences at each labelled-set size, in points", "Mean over the paired seeds.",
         accuracy_points_table(groups)),
        ("CPU hours spent by each labelled-set size", "Cumulative (every phase of that round and the rounds "
         "before it, queries included), mean over seeds; the search's share of all phases.",
         cumulative_hours_table(groups)),
        ("iNAS's CPU hours as a multiple of a fixed architecture's", "Every phase of the rounds both runs of a "
         "seed completed.", cost_ratio_table(groups)),
        ("Parameters", "Trainable parameters of the networks trained in every round of every seed.",
         parameter_table(groups)),
        ("Every run", "", runs_table(groups)),
        ("Run files", f"The {len(runs)} files these numbers and summary.md come from (first 12 hex digits of "
         "the sha1), relative to this folder.", sources_table(runs, out)),
    ]
    return INTRO + "".join(f"\n## {title}\n\n" + (f"{note}\n\n" if note else "") + body
                           for title, note, body in sections if body)

