"""The report's arithmetic: curves over seeds, AUC, paired differences and their t statistics, CPU hours.

No rounding happens here: every function returns full-precision floats, and the tables round each
printed value once.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from inas_jax.config import PHASES

# The phases of a round, in order, as results.json's seconds and cpu_seconds name them (the loop's
# PhaseClock times the same phases; this module is their jax-free home).

# Two-sided 95% quantiles of Student's t with df = 1..30 degrees of freedom (normal beyond).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def sample_std(values, axis=0) -> np.ndarray:
    """Standard deviation over seeds with ddof=1 (the sample's); 0 for a single seed."""
    values = np.asarray(values, float)
    return values.std(axis, ddof=1) if values.shape[axis] > 1 else np.zeros(np.delete(values.shape, axis))


def t975(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom (T975; 1.96 beyond 30)."""
    return T975[df - 1] if df <= len(T975) else 1.96


def t_interval(diffs) -> tuple[float, float] | None:
    """95% paired-t interval of the mean of per-seed differences; None for fewer than two seeds."""
    n = len(diffs)
    if n < 2:
        return None
    half = t975(n - 1) * float(np.std(diffs, ddof=1)) / math.sqrt(n)
    return float(np.mean(diffs)) - half, float(np.mean(diffs)) + half


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b


def t_p_value(t: float, df: int) -> float:
    """Two-sided p-value of Student's t statistic `t` with `df` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return _incomplete_beta(df / 2, 0.5, df / (df + t * t))


def t_quantile(q: float, df: int) -> float:
    """The t with P(T <= t) = q (q in (0.5, 1)) for Student's t with `df` degrees of freedom, by bisection."""
    low, high = 0.0, 1e6
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if t_p_value(middle, df) / 2 > 1 - q else (low, middle)
    return (low + high) / 2


def paired_t(diffs) -> tuple[float, float] | None:
    """(t statistic, two-sided p) of per-seed differences against 0; None for fewer than two seeds."""
    n = len(diffs)
    if n < 2:
        return None
    sd = float(np.std(diffs, ddof=1))
    mean = float(np.mean(diffs))
    t = mean / (sd / math.sqrt(n)) if sd > 0 else math.copysign(math.inf, mean) if mean else 0.0
    return t, t_p_value(abs(t), n - 1)


def equivalence(diffs, margin: float) -> tuple[float, float, float] | None:
    """Two one-sided paired t-tests (TOST) of |mean difference| < `margin`: (low, high, p) with
    [low, high] the 90% paired-t interval and p the larger of the two one-sided p-values; equivalence at
    5% is p < 0.05, i.e. the interval inside (-margin, +margin). None for fewer than two seeds."""
    n = len(diffs)
    if n < 2:
        return None
    mean, se = float(np.mean(diffs)), float(np.std(diffs, ddof=1)) / math.sqrt(n)
    half = t_quantile(0.95, n - 1) * se

    def above(t: float) -> float:
        """P(T > t), Student's t with n - 1 degrees of freedom."""
        tail = t_p_value(abs(t), n - 1) / 2
        return tail if t >= 0 else 1 - tail
    if se == 0:
        p = 0.0 if abs(mean) < margin else 1.0
    else:
        p = max(above((mean + margin) / se), above((margin - mean) / se))
    return mean - half, mean + half, p


def seeds_needed(mean: float, sd: float, most: int = 1000) -> tuple[int | None, int | None]:
    """Seeds for which, if the per-seed differences kept this mean and sd: (the 95% paired-t interval
    excludes 0; a two-sided 5% paired t-test has 80% power, by sqrt(n) |mean| / sd >= t_.975 + t_.80
    with n - 1 degrees of freedom). None where `most` seeds would not do (say a mean of 0)."""
    def first(ok):
        """The least n in 2..most with ok(n), by bisection: ok is monotone (sqrt(n) grows, t shrinks)."""
        if not ok(most):
            return None
        low, high = 1, most  # ok(high); not ok(low), or low is below the range
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if ok(middle) else (middle, high)
        return high
    if sd == 0:
        return (2, 2) if mean else (None, None)
    effect = abs(mean) / sd
    return (first(lambda n: math.sqrt(n) * effect > t975(n - 1)),
            first(lambda n: math.sqrt(n) * effect >= t_quantile(0.975, n - 1) + t_quantile(0.8, n - 1)))


def curve(runs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels (R,), mean accuracy (R,), sample std (R,)) over seeds, on the rounds every seed completed."""
    n = completed(runs)
    labels = np.array([r["num_labelled"] for r in runs[0]["rounds"][:n]])
    acc = np.array([[r["test_accuracy"] for r in run["rounds"][:n]] for run in runs])
    return labels, acc.mean(0), sample_std(acc)


def completed(runs: list[dict]) -> int:
    """The number of rounds every run of `runs` completed."""
    return min(len(r["rounds"]) for r in runs)


def area_under_curve(labels: np.ndarray, accuracy: np.ndarray) -> float:
    """Mean accuracy over the label range: trapezoidal area / (last - first labels); one point = itself."""
    if len(labels) < 2:
        return float(accuracy[0])
    return float(np.sum((accuracy[1:] + accuracy[:-1]) / 2 * np.diff(labels)) / (labels[-1] - labels[0]))


def run_auc(run: dict, rounds: int) -> float:
    """area_under_curve of one run's first `rounds` rounds."""
    done = run["rounds"][:rounds]
    return area_under_curve(np.array([r["num_labelled"] for r in done]), np.array([r["test_accuracy"] for r in done]))


def round_cpu_hours(run: dict, rounds: int) -> np.ndarray | None:
    """CPU hours (all threads) of each phase (PHASES) in each of the first `rounds` rounds, (rounds, 3);
    None when a round lacks cpu_seconds (runs recorded before they were)."""
    done = run["rounds"][:rounds]
    if not all("cpu_seconds" in r for r in done):
        return None
    return np.array([[r["cpu_seconds"].get(p, 0.0) / 3600 for p in PHASES] for r in done])


def phase_hours(runs: list[dict]) -> list[np.ndarray]:
    """CPU hours of each phase (3,) of every run that records cpu_seconds, over the rounds every seed
    of `runs` completed."""
    n = completed(runs)
    return [h.sum(0) for h in (round_cpu_hours(run, n) for run in runs) if h is not None]


def cumulative_cpu_hours(runs: list[dict]) -> np.ndarray | None:
    """Mean over seeds of the CPU hours spent up to and including each round's query (R,), on the
    rounds every seed completed; None when a run lacks cpu_seconds."""
    n = completed(runs)
    hours = [round_cpu_hours(run, n) for run in runs]
    if any(h is None for h in hours):
        return None
    return np.mean([np.cumsum(h.sum(1)) for h in hours], 0)


class Comparison(NamedTuple):
    """Two curves compared seed by seed: `first` - `second` (a query and random under one strategy,
    or iNAS and a fixed architecture under one query)."""
    dataset: str
    name: str  # "iNAS: sr - random", "sr: iNAS - A(2,4)"
    first: str
    second: str
    runs_a: list
    runs_b: list


def inas_vs_fixed(groups) -> list[tuple[str, str, str, list[dict], list[dict]]]:
    """(dataset, query, fixed strategy, iNAS runs, fixed runs) for every fixed architecture run with
    the same dataset and query as an iNAS curve."""
    return [(dataset, query, other, runs, fixed)
            for (dataset, strategy, query), runs in sorted(groups.items()) if strategy == "iNAS"
            for (d2, other, q2), fixed in sorted(groups.items()) if d2 == dataset and q2 == query and other != "iNAS"]


def comparisons(groups) -> list[Comparison]:
    """Each active query against random under the same strategy, then iNAS against each fixed
    architecture under the same query."""
    out = [Comparison(dataset, f"{strategy}: {query} - random", query, "random", runs,
                      groups[(dataset, strategy, "random")])
           for (dataset, strategy, query), runs in sorted(groups.items())
           if query != "random" and (dataset, strategy, "random") in groups]
    return out + [Comparison(dataset, f"{query}: iNAS - {other}", "iNAS", other, inas, fixed)
                  for dataset, query, other, inas, fixed in inas_vs_fixed(groups)]


def seed_pairs(runs_a: list[dict], runs_b: list[dict]) -> list[tuple[dict, dict, int]]:
    """(run a, run b, rounds both completed) for every seed both lists have, by seed."""
    a = {run["config"]["seed"]: run for run in runs_a}
    b = {run["config"]["seed"]: run for run in runs_b}
    return [(a[s], b[s], min(len(a[s]["rounds"]), len(b[s]["rounds"]))) for s in sorted(set(a) & set(b))]


def auc_differences(comparison: Comparison) -> list[tuple[int, float]]:
    """(seed, AUC of run a - AUC of run b) of every seed both curves have, over the rounds both completed."""
    return [(a["config"]["seed"], run_auc(a, n) - run_auc(b, n))
            for a, b, n in seed_pairs(comparison.runs_a, comparison.runs_b)]


def paired_aucs(groups) -> list[tuple[Comparison, list[tuple[int, float]]]]:
    """(comparison, its per-seed AUC differences) of every comparison with at least one seed in common."""
    return [(c, pairs) for c in comparisons(groups) for pairs in [auc_differences(c)] if pairs]


def finding(comparison: Comparison, interval: tuple[float, float] | None) -> str:
    """Which side the 95% interval of the differences favours: '<first> better', '<second> better',
    'inconclusive' where it includes 0, or 'one seed: no interval'."""
    if interval is None:
        return "one seed: no interval"
    return (f"{comparison.first} better" if interval[0] > 0 else f"{comparison.second} better" if interval[1] < 0
            else "inconclusive")


def accuracy_differences(comparison: Comparison) -> dict[int, float]:
    """{labelled-set size: mean over seeds of test accuracy of run a - run b}, on the rounds both runs of
    a seed completed (each size averaged over the seeds that reached it)."""
    at: dict[int, list[float]] = {}
    for a, b, n in seed_pairs(comparison.runs_a, comparison.runs_b):
        for ra, rb in zip(a["rounds"][:n], b["rounds"][:n]):
            if ra["num_labelled"] == rb["num_labelled"]:
                at.setdefault(ra["num_labelled"], []).append(ra["test_accuracy"] - rb["test_accuracy"])
    return {n: float(np.mean(d)) for n, d in sorted(at.items())}


def cost_ratios(inas: list[dict], fixed: list[dict]) -> list[tuple[int, float]]:
    """(seed, iNAS's total CPU hours / the fixed run's) over the rounds both completed, for every seed
    both record cpu_seconds for."""
    out = []
    for a, b, rounds in seed_pairs(inas, fixed):
        ha, hb = round_cpu_hours(a, rounds), round_cpu_hours(b, rounds)
        if ha is not None and hb is not None:
            out.append((a["config"]["seed"], float(ha.sum() / hb.sum())))
    return out


def parameter_span(runs: list[dict]) -> tuple[int, int] | None:
    """(fewest, most) trainable parameters of the networks of every round of `runs`; None when no round
    records num_params."""
    params = [r["num_params"] for run in runs for r in run["rounds"] if isinstance(r.get("num_params"), int)]
    return (min(params), max(params)) if params else None
