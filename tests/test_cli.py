"""The driver end to end on digits with tiny settings: every query x strategy, resume, refusal."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from absl import flags

from conftest import TINY, crash_at_epoch_call, results_of, run_cli, without_timings
from inas_jax import main as cli
from inas_jax.queries import QUERIES

@pytest.mark.parametrize("strategy", ["inas", "fixed"])
@pytest.mark.parametrize("query", list(QUERIES))
def test_two_rounds_every_query_and_strategy(tmp_path, capsys, query, strategy):
    args = TINY + [f"--query={query}", f"--strategy={strategy}", f"--workdir={tmp_path}"]
    if strategy == "fixed":
        args.append("--arch=1,2")
    assert run_cli(args) == 0
    results = results_of(tmp_path)
    assert results["finished"] and [r["num_labelled"] for r in results["rounds"]] == [40, 60]
    for r in results["rounds"]:
        assert {"num_labelled", "arch", "num_params", "test_accuracy", "candidates", "seconds"} <= set(r)
        assert set(r["seconds"]) == {"search", "train", "query"} and 0.0 <= r["test_accuracy"] <= 1.0
    if strategy == "fixed":
        assert all(r["arch"] == [1, 2] and r["candidates"] == [] for r in results["rounds"])
    else:
        assert {tuple(c["arch"]) for c in results["rounds"][0]["candidates"]} == {(1, 1), (2, 1), (1, 2)}
    assert len(results["labelled"]) == 60 and len(set(results["labelled"])) == 60
    assert "test acc" in capsys.readouterr().out


def test_rerun_of_a_finished_run_changes_nothing(tmp_path):
    args = TINY + ["--strategy=fixed", "--arch=1,1", f"--workdir={tmp_path}"]
    assert run_cli(args) == 0
    first = results_of(tmp_path)
    assert run_cli(args) == 0
    assert results_of(tmp_path) == first


def test_refuses_workdir_of_another_config(tmp_path, capsys):
    args = TINY + ["--strategy=fixed", "--arch=1,1", f"--workdir={tmp_path}"]
    assert run_cli(args + ["--budget=40"]) == 0
    assert run_cli(args + ["--budget=40", "--seed=1"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "seed: 0 -> 1" in err


def test_resume_mid_training_equals_uninterrupted(tmp_path, monkeypatch):
    """A crash inside round 2's training resumes from its epoch checkpoint to the same results."""
    args = TINY + ["--strategy=fixed", "--arch=1,1", "--epochs=4", "--checkpoint_seconds=0"]
    assert run_cli(args + [f"--workdir={tmp_path / 'whole'}"]) == 0
    from inas_jax import train as train_mod
    real_epoch = crash_at_epoch_call(monkeypatch, 6)  # round 2, epoch 2 (round 1 used 4 epochs)
    with pytest.raises(KeyboardInterrupt):
        run_cli(args + [f"--workdir={tmp_path / 'cut'}"])
    assert os.listdir(tmp_path / "cut" / "training") == ["1"]
    monkeypatch.setattr(train_mod, "train_epoch", real_epoch)
    assert run_cli(args + [f"--workdir={tmp_path / 'cut'}"]) == 0
    assert without_timings(results_of(tmp_path / "cut")) == without_timings(results_of(tmp_path / "whole"))


def test_killed_process_resumes_to_the_sameresults_of(tmp_path):
    """SIGKILL the real command once round 1 is committed; rerunning it ends as an uninterrupted run."""
    flags_ = [*TINY, "--budget=100", "--query=coreset", "--strategy=fixed", "--arch=1,1"]
    assert run_cli(flags_ + [f"--workdir={tmp_path / 'whole'}"]) == 0
    args = [sys.executable, "-m", "inas_jax.main", *flags_]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cut = tmp_path / "cut"
    proc = subprocess.Popen(args + [f"--workdir={cut}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (cut / "results.json").exists() and len(results_of(cut)["rounds"]) >= 1:
            break
        time.sleep(0.05)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the run finished before it could be killed"
    assert len(results_of(cut)["rounds"]) < 4
    again = subprocess.run(args + [f"--workdir={cut}"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    assert without_timings(results_of(cut)) == without_timings(results_of(tmp_path / "whole"))


def test_resume_inside_inas_search_reuses_finished_candidates(tmp_path, monkeypatch):
    """A crash while training the 2nd iNAS candidate: the 1st is not retrained, results are unchanged."""
    args = TINY + ["--budget=40", "--epochs=2", "--inas_epochs=2", "--checkpoint_seconds=0"]
    assert run_cli(args + [f"--workdir={tmp_path / 'whole'}"]) == 0
    from inas_jax import train as train_mod
    real_epoch = crash_at_epoch_call(monkeypatch, 3)  # candidate 1 used epochs 1-2; crash in candidate 2's first
    with pytest.raises(KeyboardInterrupt):
        run_cli(args + [f"--workdir={tmp_path / 'cut'}"])
    assert json.loads((tmp_path / "cut" / "round_progress.json").read_text())["scores"][0][0] == [1, 1]
    calls = []
    monkeypatch.setattr(train_mod, "train_epoch", lambda *a, **k: (calls.append(1), real_epoch(*a, **k))[1])
    assert run_cli(args + [f"--workdir={tmp_path / 'cut'}"]) == 0
    assert len(calls) == 2 + 2 + 2  # candidates 2 and 3, then the final training: candidate 1 reused
    assert without_timings(results_of(tmp_path / "cut")) == without_timings(results_of(tmp_path / "whole"))


def test_cifar_cpu_preset_pins_the_studys_convolution_lowering():
    """The committed CIFAR study ran with patch GEMMs up to 4x4, no Winograd and inference batches of
    1000; its preset keeps that so `verify` reproduces."""
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["inas_jax", "--preset=cifar_cpu"])
    cfg = cli.config_from_flags()
    assert (cfg.model.patch_max_size, cfg.model.winograd, cfg.train.eval_batch_size) == (4, False, 1000)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["inas_jax"])
    cfg = cli.config_from_flags()
    assert (cfg.model.patch_max_size, cfg.model.winograd, cfg.train.eval_batch_size) == (16, True, 128)
