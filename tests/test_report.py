import json
import subprocess
import sys

import numpy as np
import pytest

from inas_jax.report import checking, cli, plots, tables
from inas_jax.report import statistics as st


def _results(strategy, query, seed, accs, arch=(1, 1), cpu=None, **settings):
    """cpu: CPU seconds per round {phase: seconds}, recorded as cpu_seconds when given."""
    rounds = [{"round": i + 1, "num_labelled": 100 * (i + 1), "arch": [1 + i, 1], "num_params": 1000 * (i + 1),
               "test_accuracy": a, "candidates": [], "seconds": {"search": 0, "train": 0, "query": 0},
               **({"cpu_seconds": cpu} if cpu else {})}
              for i, a in enumerate(accs)]
    cfg = {"dataset": "digits", "strategy": strategy, "query": query, "seed": seed, "arch": list(arch),
           "train": {"width": 8, "epochs": 12}, **settings}
    return {"config": cfg, "finished": True, "labelled": [], "rounds": rounds}


def _write_run(path, strategy, query, seed, accs, arch=(1, 1), cpu=None, **settings):
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(_results(strategy, query, seed, accs, arch, cpu, **settings)))
    return path / "results.json"


def _report(capsys, *args):
    """(exit status, stderr lines) of the report command run in-process."""
    status = cli.main([str(a) for a in args])
    return status, capsys.readouterr().err.strip().splitlines()


def test_area_under_curve():
    assert st.area_under_curve(np.array([100, 200, 300]), np.array([0.5, 0.7, 0.7])) == pytest.approx(0.65)
    assert st.area_under_curve(np.array([100]), np.array([0.4])) == 0.4


def test_seeds_are_grouped_into_mean_and_std(tmp_path):
    _write_run(tmp_path / "a", "inas", "sr", 0, [0.5, 0.7, 0.8])
    _write_run(tmp_path / "b", "inas", "sr", 1, [0.7, 0.9])
    _write_run(tmp_path / "c", "fixed", "sr", 0, [0.4, 0.6], arch=(2, 4))
    groups = checking.group_runs(checking.load_runs([str(tmp_path / "*")]))
    assert set(groups) == {("digits", "iNAS", "sr"), ("digits", "A(2,4)", "sr")}
    labels, mean, std = st.curve(groups[("digits", "iNAS", "sr")])
    assert labels.tolist() == [100, 200]  # only rounds every seed completed
    np.testing.assert_allclose(mean, [0.6, 0.8])
    np.testing.assert_allclose(std, [0.1 * 2 ** 0.5, 0.1 * 2 ** 0.5])  # sample std, ddof=1
    assert "| digits | iNAS | sr | 2 | 100-200 | 0.7000 +- 0.1414 |" in tables.summary_table(groups)
    assert "| digits | A(2,4) | sr | 1 | 100-200 | 0.5000 (one seed) |" in tables.summary_table(groups)


def test_paired_differences_match_seeds(tmp_path):
    _write_run(tmp_path / "a0", "inas", "sr", 0, [0.5, 0.7])
    _write_run(tmp_path / "a1", "inas", "sr", 1, [0.6, 0.8])
    _write_run(tmp_path / "r0", "inas", "random", 0, [0.5, 0.5])
    _write_run(tmp_path / "r1", "inas", "random", 1, [0.6, 0.6, 0.9])  # a third round the pair lacks
    _write_run(tmp_path / "f0", "fixed", "sr", 0, [0.4, 0.6], arch=(1, 2))
    _write_run(tmp_path / "f7", "fixed", "sr", 7, [0.1, 0.1], arch=(1, 2))  # no iNAS seed 7: unpaired
    table = tables.paired_table(checking.group_runs(checking.load_runs([str(tmp_path / "*")])))
    assert "| digits | iNAS: sr - random | 2 | +0.1000 +- 0.0000 | [+0.1000, +0.1000] | sr better | " \
           "+0.1000, +0.1000 |" in table
    assert "| digits | sr: iNAS - A(1,2) | 1 | +0.1000 +- 0.0000 | n/a | one seed: no interval | +0.1000 |" in table
    assert "A(1,2): sr - random" not in table  # no random run under A(1,2)


def test_paired_t_interval_and_findings(tmp_path):
    """Three seeds: the 95% paired-t interval mean +- 4.303 sd / sqrt(3); a finding only when it excludes 0."""
    diffs = [0.01, 0.03, 0.05]
    low, high = st.t_interval(diffs)
    assert (low, high) == pytest.approx((0.03 - 4.303 * 0.02 / 3 ** 0.5, 0.03 + 4.303 * 0.02 / 3 ** 0.5))
    assert st.t_interval([0.1]) is None
    for seed, (fixed, inas) in enumerate([(0.5, 0.6), (0.5, 0.45), (0.5, 0.58)]):  # mixed signs
        _write_run(tmp_path / f"i{seed}", "inas", "sr", seed, [inas, inas])
        _write_run(tmp_path / f"f{seed}", "fixed", "sr", seed, [fixed, fixed], arch=(2, 4))
        _write_run(tmp_path / f"r{seed}", "inas", "random", seed, [inas - 0.05, inas - 0.04 - 0.01 * seed])
    table = tables.paired_table(checking.group_runs(checking.load_runs([str(tmp_path / "*")])))
    assert "| digits | sr: iNAS - A(2,4) | 3 |" in table and "| inconclusive |" in table
    assert "| digits | iNAS: sr - random | 3 |" in table and "| sr better |" in table


def test_accuracy_table_with_a_reference_row(tmp_path, capsys):
    _write_run(tmp_path / "runs" / "a", "inas", "sr", 0, [0.5, 0.7])
    _write_run(tmp_path / "runs" / "b", "inas", "sr", 1, [0.7, 0.9])
    table = tables.accuracy_table(checking.group_runs(checking.load_runs([str(tmp_path / "runs" / "*")])),
                                  {"ResNet-18": {100: 0.47, 150: 0.52, 200: 0.58, 300: 0.67}})
    assert table.splitlines()[0] == "| dataset | strategy | query | seeds | 100 | 200 |"
    assert "| digits | iNAS | sr | 2 | 0.600 +- 0.141 | 0.800 +- 0.141 |" in table
    assert "| ResNet-18 | | | | 0.470 | 0.580 |" in table
    assert "ResNet-18 at label counts the runs do not have: 150: 0.520, 300: 0.670." in table
    status, err = _report(capsys, f"--out={tmp_path / 'out'}", "--reference=ResNet-18=100:0.47,200:0.58",
                          tmp_path / "runs" / "*")
    assert status == 0 and "| ResNet-18 | | | | 0.470 | 0.580 |" in (tmp_path / "out" / "summary.md").read_text()
    status, err = _report(capsys, f"--out={tmp_path / 'out'}", "--reference=ResNet-18=100", tmp_path / "runs" / "*")
    assert status == 2 and len(err) == 1 and "expected NAME=LABELS:ACCURACY" in err[0]


def test_accuracy_plots_draw_the_reference(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _write_run(tmp_path / "runs" / "a", "inas", "sr", 0, [0.5, 0.7])
    groups = checking.group_runs(checking.load_runs([str(tmp_path / "runs" / "*")]))
    _, ax = plt.subplots()
    plots.plot_lines(ax, [("iNAS", groups[("digits", "iNAS", "sr")])], "t", {"ResNet-18": {200: 0.58, 100: 0.47}})
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"iNAS (n=1)", "ResNet-18"}
    assert list(lines["ResNet-18"].get_xdata()) == [100, 200] and list(lines["ResNet-18"].get_ydata()) == [0.47, 0.58]
    plt.close("all")


def test_cost_table_and_compute_plot(tmp_path):
    """CPU hours per phase (mean over seeds) and iNAS's total as a multiple of the fixed run's, per seed."""
    for seed in (0, 1):
        _write_run(tmp_path / "runs" / f"i{seed}", "inas", "sr", seed, [0.5, 0.7],
                   cpu={"search": 3600.0, "train": 1800.0 * (1 + seed), "query": 36.0})
        _write_run(tmp_path / "runs" / f"f{seed}", "fixed", "sr", seed, [0.5, 0.6], arch=(2, 4),
                   cpu={"search": 0.0, "train": 3600.0, "query": 36.0})
    _write_run(tmp_path / "runs" / "old", "fixed", "random", 0, [0.4, 0.5], arch=(2, 4))  # no cpu_seconds
    groups = checking.group_runs(checking.load_runs([str(tmp_path / "runs" / "*")]))
    table = tables.cost_table(groups)
    # iNAS: 2 rounds x (1 + 0.5|1.0 + 0.01) h; fixed: 2 x 1.01 h -> ratios 2.51/1.01... per seed
    ratios = [(1 + 0.5 + 0.01) / 1.01, (1 + 1.0 + 0.01) / 1.01]
    assert f"| digits | iNAS | sr | 2 | 2.00 | 1.50 | 0.020 | 3.52 | {np.mean(ratios):.2f}x +- " \
           f"{np.std(ratios, ddof=1):.2f} A(2,4) |" in table
    assert "| digits | A(2,4) | sr | 2 | 0.00 | 2.00 | 0.020 | 2.02 |  |" in table
    assert "random" not in table  # runs without cpu_seconds have no cost row
    np.testing.assert_allclose(st.cumulative_cpu_hours(groups[("digits", "iNAS", "sr")]),
                               [1.51 + 0.25, 2 * (1.51 + 0.25)])
    written = cli.write_report(checking.load_runs([str(tmp_path / "runs" / "*")]), str(tmp_path / "out"))
    assert str(tmp_path / "out" / "compute.png") in written
    assert "Compute per run" in (tmp_path / "out" / "summary.md").read_text()


def test_architecture_table_lists_every_inas_run(tmp_path):
    _write_run(tmp_path / "a0", "inas", "sr", 0, [0.5, 0.7, 0.8])
    _write_run(tmp_path / "a1", "inas", "sr", 1, [0.6, 0.8])
    _write_run(tmp_path / "f0", "fixed", "sr", 0, [0.4, 0.6], arch=(1, 2))
    table = tables.architecture_table(checking.group_runs(checking.load_runs([str(tmp_path / "*")])))
    lines = table.splitlines()
    assert lines[0] == "| dataset | query | seed | 100 | 200 | 300 |"
    assert lines[2:] == ["| digits | sr | 0 | A(1,1) | A(2,1) | A(3,1) |", "| digits | sr | 1 | A(1,1) | A(2,1) |  |"]


def test_report_command_writes_pngs(tmp_path):
    """A figure per strategy, and per query run under more than one strategy (random, not sr)."""
    _write_run(tmp_path / "runs" / "a", "inas", "sr", 0, [0.5, 0.7])
    _write_run(tmp_path / "runs" / "b", "inas", "random", 0, [0.4, 0.6])
    _write_run(tmp_path / "runs" / "c", "fixed", "random", 0, [0.4, 0.5], arch=(1, 2))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "inas_jax.report", f"--out={out}", str(tmp_path / "runs" / "*")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["architectures.png", "compare_random.png", "curves_A1x2.png", "curves_iNAS.png", "numbers.md",
                     "summary.md"]
    assert all((out / n).read_bytes()[:4] == b"\x89PNG" for n in names if n.endswith(".png"))
    assert "| digits | sr | 0 | A(1,1) | A(2,1) |" in (out / "summary.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "inas_jax.report", str(tmp_path / "nothing")],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "no results.json" in bad.stderr


def _edit(change):
    run = _results("inas", "sr", 0, [0.5, 0.7])
    change(run)
    return json.dumps(run)


VALID = json.dumps(_results("inas", "sr", 0, [0.5, 0.7]))
MALFORMED = [
    ("[1, 2]", "expected a JSON object with 'config' and 'rounds', found list"),
    ('"text"', "found str"),
    (_edit(lambda r: r.pop("config")), "lacks 'config'"),
    (_edit(lambda r: r.pop("rounds")), "lacks 'rounds'"),
    (_edit(lambda r: r.update(config=[1])), "config is list"),
    (_edit(lambda r: r["config"].pop("seed")), "config lacks 'seed'"),
    (_edit(lambda r: r["config"].update(strategy="grow")), "config has strategy='grow': expected 'inas' or 'fixed'"),
    (_edit(lambda r: r["config"].update(seed="0")), "config has seed='0'"),
    (_edit(lambda r: r["config"].update(arch=[13, 1])), "config arch: Arch(13, 1) is outside the grid"),
    (_edit(lambda r: r.update(rounds={"1": {}})), "rounds is dict, expected a list of round records"),
    (_edit(lambda r: r["rounds"].append(7)), "round 3 is int"),
    (_edit(lambda r: r["rounds"][1].pop("test_accuracy")), "round 2 lacks 'test_accuracy'"),
    (_edit(lambda r: r["rounds"][0].pop("num_labelled")), "round 1 lacks 'num_labelled'"),
    (_edit(lambda r: r["rounds"][1].pop("arch")), "round 2 lacks 'arch'"),
    (_edit(lambda r: r["rounds"][1].update(num_labelled=100)), "round 2 has num_labelled=100: expected an integer"),
    (_edit(lambda r: r["rounds"][0].update(num_labelled="100")), "num_labelled='100'"),
    (_edit(lambda r: r["rounds"][0].update(test_accuracy=float("nan"))), "test_accuracy=nan"),
    (_edit(lambda r: r["rounds"][0].update(test_accuracy=87.5)), "expected a number in [0, 1]"),
    (_edit(lambda r: r["rounds"][0].update(arch=[1])), "round 1 arch: not an architecture"),
    (_edit(lambda r: r["rounds"][0].update(num_params=None)), "num_params=None"),
    ("", "not valid JSON"),
    ("{config", "not valid JSON"),
    (VALID[:len(VALID) // 2], "not valid JSON"),
    (b"\xff\xfe\x00garbage", "cannot be read"),
]


@pytest.mark.parametrize("content,message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_results_give_one_error_line_naming_the_file(tmp_path, capsys, content, message):
    file = tmp_path / "run" / "results.json"
    file.parent.mkdir()
    file.write_bytes(content if isinstance(content, bytes) else content.encode())
    status, err = _report(capsys, f"--out={tmp_path / 'out'}", file.parent)
    assert status == 2 and len(err) == 1 and err[0].startswith(f"error: {file}: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_report_command_refuses_a_truncated_file_without_traceback(tmp_path):
    file = tmp_path / "results.json"
    file.write_text(VALID[:-10])
    proc = subprocess.run([sys.executable, "-m", "inas_jax.report", f"--out={tmp_path / 'out'}", str(file)],
                          capture_output=True, text=True, timeout=600)
    err = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert err[0].startswith(f"error: {file}: not valid JSON (") and err[0].endswith("); truncated?")


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    _write_run(tmp_path / "a", "inas", "sr", 0, [0.5, 0.7])
    out = tmp_path / "report"
    out.write_text("keep me")
    status, err = _report(capsys, f"--out={out}", tmp_path / "a")
    assert status == 2 and err == [f"error: --out={str(out)!r} exists and is not a directory"]
    assert out.read_text() == "keep me"
    status, err = _report(capsys, f"--out={out / 'sub'}", tmp_path / "a")
    assert status == 2 and len(err) == 1 and "cannot be created" in err[0]


def test_the_same_run_given_twice_counts_once(tmp_path, capsys):
    _write_run(tmp_path / "runs" / "a", "inas", "sr", 0, [0.5, 0.7])
    _write_run(tmp_path / "runs" / "b", "inas", "sr", 1, [0.7, 0.9])
    (tmp_path / "link").symlink_to(tmp_path / "runs" / "a")
    given = [tmp_path / "runs" / "a", tmp_path / "runs" / "a" / "results.json", tmp_path / "link",
             tmp_path / "link" / "results.json", tmp_path / "runs" / "*"]
    runs = checking.load_runs([str(p) for p in given])
    assert sorted(r["config"]["seed"] for r in runs) == [0, 1]
    assert "| digits | iNAS | sr | 2 | 100-200 | 0.7000 +- 0.1414 |" in tables.summary_table(checking.group_runs(runs))
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "results.json").write_bytes((tmp_path / "runs" / "a" / "results.json").read_bytes())
    status, err = _report(capsys, f"--out={tmp_path / 'out'}", tmp_path / "runs" / "*", tmp_path / "copy")
    assert status == 2 and len(err) == 1 and "are the same run (digits iNAS sr, seed 0): give each run once" in err[0]


@pytest.mark.parametrize("settings,message", [
    (dict(train={"width": 16, "epochs": 12}), "differ in train.width: 8 vs 16: only the seed may differ"),
    (dict(budget=300), "differ in budget: absent vs 300"),
    (dict(dataset="npz:/data/digits.npz"), "differ in dataset: 'digits' vs 'npz:/data/digits.npz'"),
    (dict(arch=[1, 2]), "differ in arch: [1, 1] vs [1, 2]"),  # iNAS started elsewhere
])
def test_runs_differing_in_more_than_the_seed_are_not_averaged(tmp_path, capsys, settings, message):
    a = _write_run(tmp_path / "runs" / "a", "inas", "sr", 0, [0.5, 0.7])
    b = _write_run(tmp_path / "runs" / "b", "inas", "sr", 1, [0.7, 0.9], **settings)
    status, err = _report(capsys, f"--out={tmp_path / 'out'}", tmp_path / "runs" / "*")
    assert status == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert f"{a} and {b} would be seeds of one curve (digits iNAS sr)" in err[0] and message in err[0]
    assert not (tmp_path / "out").exists()


def test_a_run_recorded_before_xla_max_channels_existed_is_a_seed_of_the_curve_with_zero(tmp_path):
    """Records without xla_max_channels ran with the lowering xla_max_channels=0 keeps: one curve."""
    _write_run(tmp_path / "old", "inas", "sr", 0, [0.5, 0.7], model={"width": 8})
    _write_run(tmp_path / "new", "inas", "sr", 1, [0.7, 0.9], model={"width": 8, "xla_max_channels": 0})
    assert [len(g) for g in checking.group_runs(checking.load_runs([str(tmp_path / "*")])).values()] == [2]
    _write_run(tmp_path / "fast", "inas", "sr", 2, [0.7, 0.9], model={"width": 8, "xla_max_channels": 16})
    with pytest.raises(checking.ReportError, match="differ in model.xla_max_channels: (0 vs 16|16 vs 0)"):
        checking.group_runs(checking.load_runs([str(tmp_path / "*")]))


def test_seeds_with_different_round_counts_are_reported_with_a_warning(tmp_path, capsys):
    a = _write_run(tmp_path / "runs" / "a", "fixed", "sr", 0, [0.5, 0.7, 0.8], arch=(2, 4))
    b = _write_run(tmp_path / "runs" / "b", "fixed", "sr", 1, [0.7, 0.9], arch=(2, 4))
    _write_run(tmp_path / "runs" / "c", "fixed", "random", 0, [0.4, 0.6], arch=(2, 4))
    status, err = _report(capsys, f"--out={tmp_path / 'out'}", tmp_path / "runs" / "*")
    assert status == 0 and err == [f"warning: digits A(2,4) sr: seeds completed different numbers of rounds "
                                   f"({a}: 3, {b}: 2); its curve and tables use the first 2"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["curves_A2x4.png", "numbers.md", "summary.md"]


def test_paper_experiment_commands():
    sys.path.insert(0, "experiments")
    import paper
    main = paper.commands("main", "svhn", [0, 1], None)
    assert len(main) == 2 * (3 * 3 + 1)
    assert all("--preset=paper" in c for c in main)
    assert sum("--query=random" in c for c in main) == 2
    longtail = paper.commands("longtail", "cifar10", [0], "/data")
    assert all("--initial_size=25000" in c and "--query=coreset" in c and "--data_dir=/data" in c for c in longtail)
    study = paper.commands("cifar_cpu", "npz:../shared/data/cifar10.npz", [0, 1], None)
    assert len(study) == 2 * 4 * 3 and all("--preset=cifar_cpu" in c for c in study)
    assert "--workdir=runs/cifar_cpu/cifar10_fixed2x4_random_seed1" in study[-1]
    plateau = [" ".join(c) for c in paper.commands("cifar_plateau", "npz:data/cifar10.npz", None, None)]
    assert len(plateau) == 3 * 4 + 3 * 2 + 5 * 3 + 3 * 4 and all("--preset=cifar_plateau" in c for c in plateau)
    first_tier = [c.split("--workdir=runs/cifar_plateau/")[1].split()[0] for c in plateau[:12]]
    assert first_tier[:4] == ["cifar10_inas_random_seed0", "cifar10_fixed2x4_random_seed0", "cifar10_inas_sr_seed0",
                              "cifar10_fixed2x4_sr_seed0"]
    assert {n.rsplit("_seed", 1)[0] for n in first_tier} == {"cifar10_inas_random", "cifar10_fixed2x4_random",
                                                               "cifar10_inas_sr", "cifar10_fixed2x4_sr"}
    replication = plateau[18:33]  # declared 2026-12-07: the architecture comparison under random, seeds 3-7
    assert all("--query=random" in c for c in replication)
    assert sorted({int(c.split("--seed=")[1].split()[0]) for c in replication}) == [3, 4, 5, 6, 7]
    family = plateau[33:]  # the query family on fixed A(1,2), seeds 0-2
    assert all("--arch=1,2" in c for c in family)
    assert [c.split("--query=")[1].split()[0] for c in family] == ["coreset", "mcdropout", "typiclust", "badge"] * 3
    assert len(paper.commands("cifar_plateau", "npz:data/cifar10.npz", [0, 1, 2], None)) == 12 + 6 + 12
    sener = paper.commands("sener", "cifar10", [0], None)
    assert all("--query_sizes=5000,5000,5000,30000" in c for c in sener)
