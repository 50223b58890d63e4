"""The driver end to end on digits with tiny settings: every query x strategy, resume, refusal."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from absl import flags

from conftest import SUBPROCESS_TIMEOUT, TINY, crash_at_epoch_call, results_of, run_cli, without_timings
from inas_jax import main as cli
from inas_jax.queries import QUERIES

def _check_two_rounds(results, capsys):
    assert results["finished"] and [r["num_labelled"] for r in results["rounds"]] == [40, 60]
    for r in results["rounds"]:
        assert {"num_labelled", "arch", "num_params", "test_accuracy", "candidates", "seconds", "environment"} <= set(r)
        assert set(r["seconds"]) == set(r["cpu_seconds"]) == {"search", "train", "query"}
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["cpu_seconds"]["train"] > 0
    assert len(results["labelled"]) == 60 and len(set(results["labelled"])) == 60
    assert "test acc" in capsys.readouterr().out


@pytest.mark.parametrize("query", list(QUERIES))
def test_two_rounds_every_query(tmp_path, capsys, query):
    assert run_cli(TINY + [f"--query={query}", "--strategy=fixed", "--arch=1,2", f"--workdir={tmp_path}"]) == 0
    results = results_of(tmp_path)
    _check_two_rounds(results, capsys)
    assert all(r["arch"] == [1, 2] and r["candidates"] == [] for r in results["rounds"])


def test_two_rounds_of_inas(tmp_path, capsys):
    assert run_cli(TINY + ["--query=sr", f"--workdir={tmp_path}"]) == 0
    results = results_of(tmp_path)
    _check_two_rounds(results, capsys)
    assert {tuple(c["arch"]) for c in results["rounds"][0]["candidates"]} == {(1, 1), (2, 1), (1, 2)}


def test_longtail_searches_until_the_current_arch_wins_once_then_keeps_it(tmp_path, capsys, monkeypatch):
    """--strategy=longtail: iNAS steps in round 1 until the current architecture wins (here forced: the
    deepest candidate always scores best for 2 steps), no search afterwards."""
    from inas_jax.loop import inas
    real_search = inas.search
    steps_seen = []

    def search(start, n, score, key, t_inas, known=None, prepare=None):
        steps_seen.append(t_inas)
        return real_search(start, n, lambda a, *rest: float(min(a.blocks, 3) + 0.1 * (a.stacks == 1)), key,
                           t_inas, known)

    monkeypatch.setattr("inas_jax.loop.round.search", search)
    assert run_cli(TINY + ["--query=coreset", "--strategy=longtail", f"--workdir={tmp_path}"]) == 0
    results = results_of(tmp_path)
    _check_two_rounds(results, capsys)
    first, second = results["rounds"]
    assert steps_seen == [60] and first["arch"] == [3, 1] == second["arch"]
    assert {tuple(c["arch"]) for c in first["candidates"]} >= {(1, 1), (2, 1), (3, 1), (4, 1)}
    assert second["candidates"] == []  # and steps_seen: round 2 did not search


def test_training_dropout_trains_and_changes_the_run(tmp_path):
    base = TINY + ["--query=bald", "--strategy=fixed", "--arch=1,1", "--budget=40"]
    assert run_cli(base + [f"--workdir={tmp_path / 'plain'}"]) == 0
    assert run_cli(base + ["--dropout=0.5", f"--workdir={tmp_path / 'dropout'}"]) == 0
    plain, dropout = results_of(tmp_path / "plain"), results_of(tmp_path / "dropout")
    assert dropout["config"]["model"]["dropout"] == 0.5
    assert plain["rounds"][0]["final_train_loss"] != dropout["rounds"][0]["final_train_loss"]


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
    """A crash inside round 2's training resumes from its epoch checkpoint to the same results. The
    restore target (a traced TrainState template) is built only for that restore, never for a
    training that starts fresh."""
    from inas_jax.loop import round as active
    built = []
    real_template = active.RoundContext.template
    monkeypatch.setattr(active.RoundContext, "template",
                        lambda *a: lambda: (built.append(1), real_template(*a)())[1])
    args = TINY + ["--strategy=fixed", "--arch=1,1", "--checkpoint_seconds=0"]
    assert run_cli(args + [f"--workdir={tmp_path / 'whole'}"]) == 0
    assert not built
    from inas_jax.loop import train as train_mod
    real_epoch = crash_at_epoch_call(monkeypatch, 4)  # round 2, epoch 2 (round 1 used 2 epochs)
    assert run_cli(args + [f"--workdir={tmp_path / 'cut'}"]) == 130  # interrupted
    assert os.listdir(tmp_path / "cut" / "training") == ["1"]
    progress = tmp_path / "cut" / "round_progress.json"
    kept = json.loads(progress.read_text())
    assert kept["round"] == 1 and kept["spent"]["seconds"]["train"] > 0 and kept["spent"]["cpu_seconds"]["train"] > 0
    # Round 2's phase times carry what the interrupted process spent up to its checkpoint (made large here).
    kept["spent"] = {"seconds": {"search": 5.0, "train": 1000.0}, "cpu_seconds": {"search": 6.0, "train": 2000.0}}
    progress.write_text(json.dumps(kept))
    monkeypatch.setattr(train_mod, "train_epoch", real_epoch)
    wall, cpu = time.perf_counter(), time.process_time()
    assert run_cli(args + [f"--workdir={tmp_path / 'cut'}"]) == 0
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu  # what the resuming process spent at most
    assert len(built) == 1
    resumed = results_of(tmp_path / "cut")["rounds"][1]
    assert 0 < resumed["seconds"]["train"] - 1000 <= wall and 0 < resumed["cpu_seconds"]["train"] - 2000 <= cpu
    assert 0 < resumed["seconds"]["search"] - 5 <= wall and 0 <= resumed["cpu_seconds"]["search"] - 6 <= cpu
    assert list(resumed["seconds"]) == ["search", "train", "query"]
    assert without_timings(results_of(tmp_path / "cut")) == without_timings(results_of(tmp_path / "whole"))


@pytest.mark.parametrize("query", ["random", "mcdropout"])
def test_a_query_that_draws_from_its_key_picks_the_same_points_after_a_resume(tmp_path, monkeypatch, query):
    """A crash inside round 2's training: the resumed run's keyed queries (random picks, MC-dropout
    passes) draw what the uninterrupted run's drew, so every record and the labelled order are the same."""
    from inas_jax.loop import train as train_mod
    args = TINY + ["--strategy=fixed", "--arch=1,1", "--budget=80", "--checkpoint_seconds=0", f"--query={query}"]
    assert run_cli(args + [f"--workdir={tmp_path / 'whole'}"]) == 0
    whole = without_timings(results_of(tmp_path / "whole"))
    assert [r["num_queried"] for r in whole["rounds"]] == [20, 20, 0]
    real_epoch = crash_at_epoch_call(monkeypatch, 4)  # round 2, epoch 2 (round 1 used 2 epochs)
    assert run_cli(args + [f"--workdir={tmp_path / 'cut'}"]) == 130  # interrupted
    assert len(results_of(tmp_path / "cut")["rounds"]) == 1
    monkeypatch.setattr(train_mod, "train_epoch", real_epoch)
    assert run_cli(args + [f"--workdir={tmp_path / 'cut'}"]) == 0
    assert without_timings(results_of(tmp_path / "cut")) == whole


def test_killed_process_resumes_to_the_same_results(tmp_path):
    """SIGKILL the real command once round 1 is committed; rerunning it ends as an uninterrupted run."""
    flags_ = [*TINY, "--budget=100", "--query=coreset", "--strategy=fixed", "--arch=1,1"]
    assert run_cli(flags_ + [f"--workdir={tmp_path / 'whole'}"]) == 0
    args = [sys.executable, "-m", "inas_jax.main", *flags_]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cut = tmp_path / "cut"
    proc = subprocess.Popen(args + [f"--workdir={cut}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + SUBPROCESS_TIMEOUT
    while time.time() < deadline and proc.poll() is None:
        if (cut / "results.json").exists() and len(results_of(cut)["rounds"]) >= 1:
            break
        time.sleep(0.05)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=SUBPROCESS_TIMEOUT)
    assert killed, "the run finished before it could be killed"
    assert len(results_of(cut)["rounds"]) < 4
    again = subprocess.run(args + [f"--workdir={cut}"], env=env, capture_output=True, text=True,
                           timeout=SUBPROCESS_TIMEOUT)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    assert without_timings(results_of(cut)) == without_timings(results_of(tmp_path / "whole"))


def test_resume_inside_inas_search_reuses_finished_candidates(tmp_path, monkeypatch):
    """A crash while training the 2nd iNAS candidate: the 1st is not retrained, results are unchanged."""
    args = TINY + ["--budget=40", "--epochs=2", "--inas_epochs=2", "--checkpoint_seconds=0"]
    assert run_cli(args + [f"--workdir={tmp_path / 'whole'}"]) == 0
    from inas_jax.loop import train as train_mod
    real_epoch = crash_at_epoch_call(monkeypatch, 3)  # candidate 1 used epochs 1-2; crash in candidate 2's first
    assert run_cli(args + [f"--workdir={tmp_path / 'cut'}"]) == 130  # interrupted
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


def test_a_rerun_elsewhere_reads_every_executable_from_the_persistent_cache(tmp_path):
    """Two workdirs, same shapes: the second run compiles nothing, and its numbers are the same."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", INAS_JAX_COMPILATION_CACHE=str(tmp_path / "cache"))
    args = [sys.executable, "-m", "inas_jax.main", *TINY, "--budget=40", "--strategy=fixed", "--arch=1,1"]
    runs = [subprocess.run(args + [f"--workdir={tmp_path / name}"], env=env, capture_output=True, text=True,
                           timeout=SUBPROCESS_TIMEOUT)
            for name in ("a", "b")]
    counts = []
    for proc in runs:
        assert proc.returncode == 0, proc.stderr[-2000:]
        line = next(line for line in proc.stderr.splitlines() if "XLA compilations" in line)
        counts.append([int(n) for n in re.findall(r"(\d+) XLA compilations \((\d+) read", line)[0]])
    (compiled_a, cached_a), (compiled_b, cached_b) = counts
    assert compiled_a > 0 and cached_a == 0
    assert compiled_b == compiled_a and cached_b == compiled_b  # every one read from disk
    assert without_timings(results_of(tmp_path / "a")) == without_timings(results_of(tmp_path / "b"))
    assert os.listdir(tmp_path / "cache")
