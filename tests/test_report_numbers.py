"""numbers.md and convergence.md: the numbers a study's text quotes, checked by hand arithmetic on small
runs, and the committed study files checked against the run files they name (no jax import)."""
import ast
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from inas_jax.config import PRESETS
from inas_jax.report import checking, classes, cli, convergence, quoted, tables
from inas_jax.report import statistics as st

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"


def _run(path: Path, strategy, query, seed, accs, cpu, arch=(1, 1), params=None):
    rounds = [{"round": i + 1, "num_labelled": 100 * (i + 1), "arch": [1 + i, 1] if strategy == "inas" else list(arch),
               "num_params": (params or [1000 * (i + 1) for i in range(len(accs))])[i], "test_accuracy": a,
               "cpu_seconds": cpu} for i, a in enumerate(accs)]
    config = {"dataset": "digits", "strategy": strategy, "query": query, "seed": seed, "arch": list(arch)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": config, "rounds": rounds}))


def test_t_distribution_against_closed_forms_and_the_t_table():
    for t in (0.3, 1.0, 2.5, 23.7):
        assert st.t_p_value(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-12)
        assert st.t_p_value(t, 2) == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-12)
    for df, tabled in enumerate(st.T975, 1):
        assert st.t_quantile(0.975, df) == pytest.approx(tabled, abs=6e-4)
    assert st.t_quantile(0.8, 2) == pytest.approx(1.0607, abs=1e-4)
    assert st.paired_t([0.01, 0.03, 0.05]) == pytest.approx((0.03 / (0.02 / math.sqrt(3)),
                                                             1 - 2.598076 / math.sqrt(2.598076 ** 2 + 2)), rel=1e-5)
    # the plateau study's random: iNAS - A(2,4): mean 0.0215, sd 0.0163: an interval excluding 0 from 5 seeds
    # (2.776 x 0.0163 / sqrt(5) = 0.0202 < 0.0215; 3.182 x 0.0163 / 2 = 0.0259 is not), 80% power from 7
    assert st.seeds_needed(0.0215, 0.0163) == (5, 7)
    assert st.seeds_needed(0.0, 0.01) == (None, None)


@pytest.fixture
def small_study(tmp_path):
    """iNAS and fixed A(2,4) under sr, seeds 0 and 1, three rounds of 100 labels each: per round iNAS
    spends 0.5 h searching and 0.5 h (seed 0) or 0.8333 h (seed 1) training, A(2,4) 0.6667 h training."""
    runs = tmp_path / "runs"
    _run(runs / "i0.json", "inas", "sr", 0, [0.5, 0.7, 0.8], {"search": 1800, "train": 1800, "query": 0})
    _run(runs / "i1.json", "inas", "sr", 1, [0.6, 0.8, 0.9], {"search": 1800, "train": 3000, "query": 0})
    _run(runs / "f0.json", "fixed", "sr", 0, [0.4, 0.6, 0.7], {"search": 0, "train": 2400, "query": 0}, (2, 4),
         [700_000] * 3)
    _run(runs / "f1.json", "fixed", "sr", 1, [0.6, 0.6, 0.5], {"search": 0, "train": 2400, "query": 0}, (2, 4),
         [700_000] * 3)
    loaded = checking.load_runs([str(runs / "*.json")])
    return tmp_path, loaded, checking.group_runs(loaded)


def test_auc_points_row_by_hand(small_study):
    _, _, groups = small_study
    # AUC over 100, 200, 300 labels = (a1 + 2 a2 + a3) / 4: iNAS 0.675 and 0.775, A(2,4) 0.575 and 0.575,
    # so differences of 10 and 20 points: mean 15, sd sqrt(50) = 7.07, t = 15 / (7.07 / sqrt 2) = 3.0,
    # p = 1 - 2 atan(3) / pi = 0.205 on one degree of freedom, interval 15 -+ 12.706 x 5 = [-48.5, +78.5].
    # Seeds needed at effect 15 / 7.07 = 2.12: sqrt(4) x 2.12 = 4.24 > 3.182 (not sqrt(3) x 2.12 = 3.67 <
    # 4.303), and 4.24 >= t_.975 + t_.80 = 3.182 + 0.978 with 3 degrees of freedom.
    row = "| digits | sr: iNAS - A(2,4) | 2 | +15.0 +- 7.1 | [-48.5, +78.5] | inconclusive | 3.0 | 0.205 | 0.205 | 4, 4 " \
          "| 0: +10.0, 1: +20.0 |"
    assert row in quoted.auc_points_table(groups).splitlines()


def test_accuracy_cost_and_parameter_rows_by_hand(small_study):
    tmp_path, runs, groups = small_study
    # accuracy differences (0.1, 0.0), (0.1, 0.2), (0.1, 0.4) at 100, 200, 300 labels: means 5, 15, 25 points
    assert "| digits | sr: iNAS - A(2,4) | 2 | +5.0 | +15.0 | +25.0 |" in quoted.accuracy_points_table(groups)
    # per round iNAS 1.0 h (seed 0) and 1.3333 h (seed 1), A(2,4) 0.6667 h: ratios 1.5 and 2.0 per seed
    assert "| digits | sr: iNAS / A(2,4) | 2 | 1.75x +- 0.35 | 1.50x-2.00x | 0: 1.50x, 1: 2.00x |" \
        in quoted.cost_ratio_table(groups)
    # cumulative: 1.1667 h a round on average; the search 1.5 h of a mean total of 3.5 h (43%)
    assert "| digits | iNAS | sr | 2 | 1.17 | 2.33 | 3.50 | 43% |" in quoted.cumulative_hours_table(groups)
    # iNAS's networks 1,000-3,000 parameters: A(2,4)'s 700,000 is 233.3x-700.0x them
    assert "| digits | iNAS | sr | 2 | 1,000-3,000 | A(2,4): 233.3x-700.0x |" in quoted.parameter_table(groups)
    assert "| digits | iNAS | sr | 0 | A(1,1) -> A(2,1) -> A(3,1) | 1,000 / 2,000 / 3,000 | 0.500 / 0.700 / 0.800 | " \
           "3.00 (1.50 + 1.50 + 0.00) |" in quoted.runs_table(groups)
    assert "| digits | A(2,4) | sr | 1 | A(2,4) | 700,000 | 0.600 / 0.600 / 0.500 | 2.00 (0.00 + 2.00 + 0.00) |" \
        in quoted.runs_table(groups)
    sha1 = hashlib.sha1((tmp_path / "runs" / "i0.json").read_bytes()).hexdigest()[:12]
    assert f"| `runs/i0.json` | {sha1} |" in quoted.sources_table(runs, str(tmp_path))


def test_equivalence_rows_by_hand(small_study):
    _, _, groups = small_study
    # sr: iNAS - A(2,4): differences 0.10 and 0.20, mean 0.15, se 0.05; one degree of freedom, t_.95 = 6.3138,
    # so the 90% interval is 0.15 -+ 0.3157 = [-16.6, +46.6] points. Margin 0.5: the one-sided p's are
    # P(T > 13) and P(T > 7) = (1 - 2 atan(7) / pi) / 2 = 0.045, below 0.05: equivalent. Margin 0.3: P(T > 3)
    # = 0.102, and the interval crosses +30 points: not shown equivalent.
    assert "| digits | sr: iNAS - A(2,4) | 2 | +-50.0 | +15.0 +- 7.1 | [-16.6, +46.6] | 0.045 | " \
           "equivalent within +-50.0 points |" in quoted.equivalence_table(groups, {"sr: iNAS - A(2,4)": 0.5})
    assert "| digits | sr: iNAS - A(2,4) | 2 | +-30.0 | +15.0 +- 7.1 | [-16.6, +46.6] | 0.102 | not shown equivalent |" \
        in quoted.equivalence_table(groups, {"sr: iNAS - A(2,4)": 0.3})
    assert quoted.equivalence_table(groups, {}) == ""


def test_equivalence_is_the_90_percent_interval_inside_the_margin():
    rng = np.random.default_rng(0)
    for _ in range(200):
        diffs = list(rng.normal(rng.normal(0, 0.01), rng.uniform(0.001, 0.02), size=int(rng.integers(2, 9))))
        low, high, p = st.equivalence(diffs, 0.01)
        assert (p < 0.05) == (-0.01 < low and high < 0.01)
        mean, se = np.mean(diffs), np.std(diffs, ddof=1) / math.sqrt(len(diffs))
        assert (high - mean) / se == pytest.approx(st.t_quantile(0.95, len(diffs) - 1))
    assert st.t_quantile(0.95, 7) == pytest.approx(1.895, abs=1e-3)
    assert st.equivalence([0.01], 0.01) is None


def test_the_report_refuses_an_equivalence_margin_it_cannot_test(small_study, capsys):
    tmp_path, _, _ = small_study
    runs = str(tmp_path / "runs" / "*.json")
    for flag, message in (("sr: iNAS - A(1,2)=0.01", "not a comparison of these runs (they have: sr: iNAS - A(2,4))"),
                          ("sr: iNAS - A(2,4)=1.5", "with a margin in (0, 1)"),
                          ("sr: iNAS - A(2,4)", "expected COMPARISON=MARGIN")):
        assert cli.main([f"--out={tmp_path / 'out'}", f"--equivalence={flag}", runs]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()
    assert cli.main([f"--out={tmp_path / 'out'}", "--equivalence=sr: iNAS - A(2,4)=0.5", runs]) == 0
    assert "| equivalent within +-50.0 points |" in (tmp_path / "out" / "numbers.md").read_text()


def test_the_report_writes_numbers_md(small_study, capsys):
    tmp_path, _, _ = small_study
    assert cli.main([f"--out={tmp_path / 'out'}", str(tmp_path / "runs" / "*.json")]) == 0
    text = (tmp_path / "out" / "numbers.md").read_text()
    assert "| dataset | comparison | seeds | AUC difference, points (mean +- sd) |" in text
    assert "`../runs/f1.json`" in text


def test_convergence_table_by_hand():
    cells = [{"arch": [1, 2], "labels": 1000, "seed": 0, "samples": s, "test_accuracy": a, "final_train_loss": 0.1}
             for s, a in ((500, 0.50), (1000, 0.505), (2000, 0.52), (250, 0.45))]
    cells.append({"arch": [1, 2], "labels": 4000, "seed": 0, "samples": 2000, "test_accuracy": 0.7,
                  "final_train_loss": 0.3})
    text = convergence.convergence_text(cells, 0.5, [1000, 2500, 4000])
    assert "| A(1,2) | 1,000 | 0 | 500 | 0.5000 | 0.5050 | 0.5200 | +0.5, +1.5 | +2.0 | yes |" in text
    assert "| A(1,2) | 1,000 | 1 | +2.0 | 0.25 | +0.50 |" in text
    assert "no cell at S and 4S: 2,500 (AUC weight 0.50), 4,000 (AUC weight 0.25)." in text
    assert "Largest |4S - S| of any cell: 2.0 points (A(1,2), 1,000 labels, seed 0); times the largest weight " \
           "of an unmeasured label count (0.50): 1.0 AUC points." in text
    assert convergence.auc_weights([1000, 1500, 2000, 3000, 4000]) == pytest.approx({1000: 1 / 12, 1500: 1 / 6,
                                                                                      2000: 0.25, 3000: 1 / 3, 4000: 1 / 6})


def _sources(study: str) -> list[str]:
    """The run files the committed numbers.md of `study` names, checked against their listed sha1."""
    text = (RESULTS / study / "numbers.md").read_text()
    listed = re.findall(r"^\| `([^`]+)` \| ([0-9a-f]{12}) \|$", text, re.M)
    assert listed, f"{study}/numbers.md lists no run files"
    for name, sha1 in listed:
        assert hashlib.sha1((RESULTS / study / name).read_bytes()).hexdigest()[:12] == sha1, \
            f"{study}/{name} changed since numbers.md was generated: run python experiments/study.py report"
    return [str(RESULTS / study / name) for name, _ in listed]


def _study_setting_value(name: str):
    """study.py's constant NAME, read without importing study.py (which imports jax)."""
    tree = ast.parse((ROOT / "experiments" / "study.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == name)
    return ast.literal_eval(node.value)


def _study_setting(name: str, study: str) -> list[str]:
    """study.py's NAME[study] (REFERENCES, EQUIVALENCE)."""
    return _study_setting_value(name).get(study, [])


@pytest.mark.parametrize("study", ["cifar_plateau", "cifar_cpu"])
def test_committed_study_files_regenerate_from_the_run_files_they_name(study):
    runs = checking.load_runs(_sources(study))
    groups = checking.group_runs(runs)
    references = dict(cli.parse_reference(text) for text in _study_setting("REFERENCES", study))
    margins = dict(cli.parse_margin(text) for text in _study_setting("EQUIVALENCE", study))
    assert tables.summary_text(groups, references) == (RESULTS / study / "summary.md").read_text()
    assert quoted.numbers_text(groups, runs, str(RESULTS / study), margins) == \
        (RESULTS / study / "numbers.md").read_text()
    if (RESULTS / study / "convergence.json").exists():
        cells = json.loads((RESULTS / study / "convergence.json").read_text())
        labels = sorted({r["num_labelled"] for run in runs for r in run["rounds"]})
        assert convergence.convergence_text(cells, PRESETS[study]["train_passes"], labels) == \
            (RESULTS / study / "convergence.md").read_text()


def _queried_run(seed: int, labelled: list[int]) -> dict:
    return {"path": f"seed{seed}.json", "config": {"seed": seed}, "labelled": labelled,
            "rounds": [{"num_labelled": 2}, {"num_labelled": len(labelled)}]}


def test_classes_of_the_queried_points_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    # Seed 0 queried points 2, 3, 4, 5 (classes 0, 1, 1, 2); seed 1 queried 5, 6, 7, 0 (classes 2, 2, 2, 0).
    runs = [_queried_run(0, [0, 1, 2, 3, 4, 5]), _queried_run(1, [3, 4, 5, 6, 7, 0])]
    assert classes.class_counts(runs[0], labels).tolist() == [1, 2, 1]
    assert classes.class_counts(runs[1], labels).tolist() == [1, 0, 3]
    b0 = -(0.25 * math.log(0.25) * 2 + 0.5 * math.log(0.5)) / math.log(3)
    b1 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(3)
    assert classes.balance(np.array([1, 2, 1])) == pytest.approx(b0)
    assert classes.balance(np.array([5, 5, 5])) == pytest.approx(1.0) and classes.balance(np.array([0, 4, 0])) == 0
    text = classes.classes_text({("toy", "A(1,2)", "sr"): runs}, labels, ("a", "b", "c"))
    sd = float(np.std([b0, b1], ddof=1))
    assert "| queried points per run | per class, mean over seeds (a / b / c) |" in text
    assert f"| toy | A(1,2) | sr | 2 | 4 | 1 / 1 / 2 | 0-3 | {(b0 + b1) / 2:.3f} +- {sd:.3f} |" in text
    with pytest.raises(ValueError, match="outside the pool's 8 labels"):
        classes.class_counts(_queried_run(0, [0, 1, 8]), labels)


def test_committed_classes_md_regenerates_from_the_run_files_and_the_pool_labels():
    from conftest import CIFAR10_NPZ
    if not CIFAR10_NPZ.exists():
        pytest.skip(f"needs the real CIFAR-10 at {CIFAR10_NPZ}")
    groups = checking.group_runs(checking.load_runs(_sources("cifar_plateau")))
    names = tuple(_study_setting_value("CIFAR10_CLASSES"))
    assert classes.classes_text(groups, classes.pool_labels(CIFAR10_NPZ), names) == (RESULTS / "cifar_plateau" / "classes.md").read_text()


def test_a_committed_row_recomputed_by_hand_from_the_run_files():
    """random: iNAS - A(2,4) of the plateau study, from the run files by plain trapezoids: the row of
    summary.md (fractions, four decimals) and of numbers.md (points, one decimal)."""
    files = {Path(f).name: json.loads(Path(f).read_text()) for f in _sources("cifar_plateau")}
    diffs = []
    for name, inas in sorted(files.items()):
        fixed = files.get(name.replace("_inas_", "_fixed2x4_"))
        if re.fullmatch(r"cifar10_inas_random_seed\d+\.json", name) and fixed:
            aucs = []
            for run in (inas, fixed):
                x = [r["num_labelled"] for r in run["rounds"]]
                y = [r["test_accuracy"] for r in run["rounds"]]
                area = sum((y[i] + y[i + 1]) / 2 * (x[i + 1] - x[i]) for i in range(len(x) - 1))
                aucs.append(area / (x[-1] - x[0]))
            diffs.append((inas["config"]["seed"], aucs[0] - aucs[1]))
    values = [d for _, d in diffs]
    mean, sd = sum(values) / len(values), float(np.std(values, ddof=1))
    summary = (RESULTS / "cifar_plateau" / "summary.md").read_text()
    assert f"| cifar10 | random: iNAS - A(2,4) | {len(values)} | {mean:+.4f} +- {sd:.4f} |" in summary
    assert "| " + ", ".join(f"{d:+.4f}" for d in values) + " |\n" in summary
    numbers = (RESULTS / "cifar_plateau" / "numbers.md").read_text()
    assert f"| cifar10 | random: iNAS - A(2,4) | {len(values)} | {100 * mean:+.1f} +- {100 * sd:.1f} |" in numbers
    assert "| " + ", ".join(f"{s}: {100 * d:+.1f}" for s, d in diffs) + " |\n" in numbers


def _tables(text: str) -> list[list[str]]:
    """The Markdown tables of a text, each as its lines."""
    out, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            out.append(current)
            current = []
    return out


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table line: "| a | b |" -> ["a", "b"]."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_the_readme_headline_tables_are_rows_of_the_study_numbers_cut_to_their_columns():
    """Every table of the README whose columns are all columns of a table of the plateau study's
    numbers.md holds rows of that table, cut to those columns: a headline number cannot drift from the
    runs."""
    generated = _tables((RESULTS / "cifar_plateau" / "numbers.md").read_text())
    matched = 0
    for lines in _tables((ROOT / "README.md").read_text()):
        head = _cells(lines[0])
        sources = [table for table in generated if set(head) <= set(_cells(table[0]))]
        if not sources:
            continue
        matched += 1
        cut = [[dict(zip(_cells(table[0]), _cells(row)))[column] for column in head]
               for table in sources for row in table[2:]]
        missing = [row for row in lines[2:] if _cells(row) not in cut]
        assert not missing, f"README rows not in numbers.md: {missing}; copy them from the regenerated file"
    assert matched >= 2


@pytest.mark.parametrize("study,least", [("cifar_plateau", 10)])
def test_the_study_readme_tables_are_rows_of_the_generated_files(study, least):
    """Every table of the study's README whose header is a generated file's is copied from it row for row."""
    generated = {name: (RESULTS / study / name).read_text().splitlines()
                 for name in ("summary.md", "numbers.md", "convergence.md", "classes.md")
                 if (RESULTS / study / name).exists()}
    matched = 0
    for lines in _tables((RESULTS / study / "README.md").read_text()):
        sources = [name for name, text in generated.items() if lines[0] in text]
        if sources:
            matched += 1
            missing = [row for row in lines[2:] if not any(row in generated[name] for name in sources)]
            assert not missing, f"README rows not in {sources}: {missing}; copy them from the regenerated files"
    assert matched >= least
