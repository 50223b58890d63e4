import json
import subprocess
import sys

import numpy as np
import pytest

from inas_jax import report


def _write_run(path, strategy, query, seed, accs, arch=(1, 1)):
    rounds = [{"round": i + 1, "num_labelled": 100 * (i + 1), "arch": [1 + i, 1], "num_params": 1000 * (i + 1),
               "test_accuracy": a, "candidates": [], "seconds": {"search": 0, "train": 0, "query": 0}}
              for i, a in enumerate(accs)]
    cfg = {"dataset": "digits", "strategy": strategy, "query": query, "seed": seed, "arch": list(arch)}
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"config": cfg, "finished": True, "labelled": [], "rounds": rounds}))


def test_area_under_curve():
    assert report.area_under_curve(np.array([100, 200, 300]), np.array([0.5, 0.7, 0.7])) == pytest.approx(0.65)
    assert report.area_under_curve(np.array([100]), np.array([0.4])) == 0.4


def test_seeds_are_grouped_into_mean_and_std(tmp_path):
    _write_run(tmp_path / "a", "inas", "sr", 0, [0.5, 0.7, 0.8])
    _write_run(tmp_path / "b", "inas", "sr", 1, [0.7, 0.9])
    _write_run(tmp_path / "c", "fixed", "sr", 0, [0.4, 0.6], arch=(2, 4))
    groups = report.group_runs(report.load_runs([str(tmp_path / "*")]))
    assert set(groups) == {("digits", "iNAS", "sr"), ("digits", "A(2,4)", "sr")}
    labels, mean, std = report.curve(groups[("digits", "iNAS", "sr")])
    assert labels.tolist() == [100, 200]  # only rounds every seed completed
    np.testing.assert_allclose(mean, [0.6, 0.8])
    np.testing.assert_allclose(std, [0.1, 0.1])
    assert "| digits | iNAS | sr | 2 | 100-200 | 0.7000 +- 0.1000 |" in report.summary_table(groups)


def test_paired_differences_match_seeds(tmp_path):
    _write_run(tmp_path / "a0", "inas", "sr", 0, [0.5, 0.7])
    _write_run(tmp_path / "a1", "inas", "sr", 1, [0.6, 0.8])
    _write_run(tmp_path / "r0", "inas", "random", 0, [0.5, 0.5])
    _write_run(tmp_path / "r1", "inas", "random", 1, [0.6, 0.6, 0.9])  # a third round the pair lacks
    _write_run(tmp_path / "f0", "fixed", "sr", 0, [0.4, 0.6], arch=(1, 2))
    _write_run(tmp_path / "f7", "fixed", "sr", 7, [0.1, 0.1], arch=(1, 2))  # no iNAS seed 7: unpaired
    table = report.paired_table(report.group_runs(report.load_runs([str(tmp_path / "*")])))
    assert "| digits | iNAS: sr - random | 2 | +0.1000 +- 0.0000 | +0.1000, +0.1000 |" in table
    assert "| digits | sr: iNAS - A(1,2) | 1 | +0.1000 +- 0.0000 | +0.1000 |" in table
    assert "A(1,2): sr - random" not in table  # no random run under A(1,2)


def test_architecture_table_lists_every_inas_run(tmp_path):
    _write_run(tmp_path / "a0", "inas", "sr", 0, [0.5, 0.7, 0.8])
    _write_run(tmp_path / "a1", "inas", "sr", 1, [0.6, 0.8])
    _write_run(tmp_path / "f0", "fixed", "sr", 0, [0.4, 0.6], arch=(1, 2))
    table = report.architecture_table(report.group_runs(report.load_runs([str(tmp_path / "*")])))
    lines = table.splitlines()
    assert lines[0] == "| dataset | query | seed | 100 | 200 | 300 |"
    assert lines[2:] == ["| digits | sr | 0 | A(1,1) | A(2,1) | A(3,1) |", "| digits | sr | 1 | A(1,1) | A(2,1) |  |"]


def test_report_command_writes_pngs(tmp_path):
    _write_run(tmp_path / "runs" / "a", "inas", "sr", 0, [0.5, 0.7])
    _write_run(tmp_path / "runs" / "b", "inas", "random", 0, [0.4, 0.6])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "inas_jax.report", f"--out={out}", str(tmp_path / "runs" / "*")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["architectures.png", "compare_random.png", "compare_sr.png", "curves_iNAS.png", "summary.md"]
    assert all((out / n).read_bytes()[:4] == b"\x89PNG" for n in names if n.endswith(".png"))
    assert "| digits | sr | 0 | A(1,1) | A(2,1) |" in (out / "summary.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "inas_jax.report", str(tmp_path / "nothing")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no results.json" in bad.stderr


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
    sener = paper.commands("sener", "cifar10", [0], None)
    assert all("--query_sizes=5000,5000,5000,30000" in c for c in sener)
