"""experiments/study.py end to end on tiny digits runs: run, skip when done, verify, detect a change."""
import argparse
import json
import os
import sys
import time

import pytest

sys.path.insert(0, "experiments")
import study  # noqa: E402

from conftest import SUBPROCESS_TIMEOUT, TINY  # noqa: E402
from inas_jax.runtime import environment  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for this module's study runs: run_grid joins the session open in this
    process instead of starting and stopping a cluster for every `study.run`."""
    import ray
    ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, log_to_driver=False,
             logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reruns():
    """verify's reruns made in this module: {(command but its workdir, CPUs): its results.json}."""
    return {}


class _Kept:
    """A rerun's process; once it has ended well, its results.json is kept for a repeat of it."""

    def __init__(self, proc, key, workdir, reruns):
        self.proc, self.key, self.workdir, self.reruns = proc, key, workdir, reruns

    def wait(self, timeout=None):
        status = self.proc.wait(timeout=timeout or SUBPROCESS_TIMEOUT)
        if status == 0:
            self.reruns[self.key] = (self.workdir / "results.json").read_text()
        return status


class _Repeated:
    """A rerun repeated: its results.json is the first one's, and it has ended well."""

    def wait(self, timeout=None):
        return 0


@pytest.fixture
def tiny_study(tmp_path, monkeypatch, cluster, reruns):
    """The tiny study (fixed A(1,1) on digits, one run per seed) with its results in tmp_path. verify
    reruns a command from scratch in a child process; a rerun this module made already (the same
    command on the same CPUs) is not made again: the repeat gets the first one's results.json. A rerun
    on as many CPUs reproduces the run bit for bit (the first verify shows it with a real one), and the
    verifies that repeat it check what verify makes of a rerun: a record changed, another CPU model."""
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")
    start_pinned = study.start_pinned

    def start_once(cmd, cpus, stdout=None):
        key = (tuple(a for a in cmd if not a.startswith("--workdir=")), tuple(cpus))
        workdir = study.workdir_of(cmd)
        if key not in reruns:
            return _Kept(start_pinned(cmd, cpus, stdout), key, workdir, reruns)
        workdir.mkdir(parents=True)
        (workdir / "results.json").write_text(reruns[key])
        return _Repeated()

    monkeypatch.setattr(study, "start_pinned", start_once)

    def tiny(name, npz, seeds):
        return [(f"digits_fixed1x1_sr_seed{s}",
                 [sys.executable, "-m", "inas_jax.main", *TINY, "--budget=60", "--strategy=fixed", "--arch=1,1",
                  f"--seed={s}", f"--workdir={tmp_path}/runs/digits_fixed1x1_sr_seed{s}"]) for s in seeds]

    monkeypatch.setattr(study, "study", tiny)
    return tmp_path


def _stopped_after_round_1(start):
    """`start` (a start_pinned), its process SIGKILLed once its results.json holds a round."""
    def start_and_stop(cmd, cpus, stdout=None):
        kept = start(cmd, cpus, stdout)
        results = study.workdir_of(cmd) / "results.json"
        while kept.proc.poll() is None and not (results.exists() and json.loads(results.read_text())["rounds"]):
            time.sleep(0.05)
        kept.proc.kill()
        return kept
    return start_and_stop


def _verify(name, cpus=None):
    return study.verify(argparse.Namespace(study="tiny", npz=None, name=name, cpus=cpus))


def test_run_then_verify_reproduces_and_catches_a_changed_result(tiny_study, capsys):
    """The run goes on one CPU; verify, from a process that may use them all, reruns it on one (XLA:CPU's
    floats depend on the thread count), and reports a rerun on more, or a changed record, as different."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})  # the run inherits one CPU
    try:
        assert study.run(argparse.Namespace(study="tiny", npz=None, seeds=[3], jobs=1)) == 0
    finally:
        os.sched_setaffinity(0, allowed)
    committed = tiny_study / "results" / "tiny" / "runs" / "digits_fixed1x1_sr_seed3.json"
    rounds = json.loads(committed.read_text())["rounds"]
    assert len(rounds) == 2 and all(len(r["labelled_sha1"]) == 40 for r in rounds)
    assert [r["environment"]["cpu_threads"] for r in rounds] == [1, 1]
    assert study.run(argparse.Namespace(study="tiny", npz=None, seeds=[3], jobs=1)) == 0  # finished: skipped, not rerun
    assert "done" in capsys.readouterr().out

    # The first rerun is stopped once its first round is in: verify fails and keeps the rerun's workdir,
    # the same verify resumes it there, reproduces the run, and removes the workdir.
    workdir = tiny_study / "runs" / "verify" / "digits_fixed1x1_sr_seed3"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study, "start_pinned", _stopped_after_round_1(study.start_pinned))
        assert _verify("digits_fixed1x1_sr_seed3") == 1
    assert len(json.loads((workdir / "results.json").read_text())["rounds"]) == 1
    assert _verify("digits_fixed1x1_sr_seed3") == 0
    out = capsys.readouterr().out
    assert f"resuming the rerun in {workdir}" in out and "reproduced" in out and not workdir.exists()
    rerun = json.loads((tiny_study / "results" / "tiny" / "verify" / "digits_fixed1x1_sr_seed3.json").read_text())
    assert study.comparable(rerun) == study.comparable(json.loads(committed.read_text()))
    if len(allowed) > 1:
        assert _verify("digits_fixed1x1_sr_seed3", cpus=2) == 1
        assert f"round 1 environment: committed {study.comparable({'rounds': rounds})[0]['environment']!r}" in (
            capsys.readouterr().out)
    assert _verify("digits_fixed1x1_sr_seed3", cpus=len(allowed) + 1) == 2
    assert "verify it where that many CPUs are free" in capsys.readouterr().err

    results = json.loads(committed.read_text())
    results["rounds"][1]["labelled_sha1"] = "0" * 40
    committed.write_text(json.dumps(results))
    assert _verify("digits_fixed1x1_sr_seed3") == 1
    assert "round 2 labelled_sha1" in capsys.readouterr().out


def test_a_run_starts_from_the_first_round_of_its_sibling_with_the_same_results(tmp_path, monkeypatch, capsys,
                                                                                  cluster):
    """Two runs differing only in the query: the second starts from the first's first round, and
    verify's rerun from scratch reproduces it."""
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")

    def two_queries(name, npz, seeds):
        return [(f"digits_fixed1x1_{q}_seed0",
                 [sys.executable, "-m", "inas_jax.main", *TINY, "--budget=60", "--strategy=fixed", "--arch=1,1",
                  "--checkpoint_seconds=0", f"--query={q}", f"--workdir={tmp_path}/runs/digits_fixed1x1_{q}_seed0"])
                for q in ("random", "sr")]

    monkeypatch.setattr(study, "study", two_queries)
    assert study.run(argparse.Namespace(study="tiny", npz=None, seeds=[0], jobs=1)) == 0
    starts = [line for line in capsys.readouterr().out.splitlines() if line.startswith("start ")]
    assert "--first_round_from" not in starts[0]
    assert starts[1].endswith(f"--first_round_from={tmp_path}/runs/digits_fixed1x1_random_seed0")
    assert _verify("digits_fixed1x1_sr_seed0") == 0
    assert "reproduced" in capsys.readouterr().out


def test_status_lists_each_run_and_estimates_the_hours_left(tmp_path, monkeypatch, capsys):
    """status: done runs with accuracy and CPU hours, runs under way with their rounds and last log line,
    runs to do; hours left = the mean finished cost of the same strategy (else of all) minus what a run
    under way has spent."""
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")
    names = ["c_inas_sr_seed0", "c_inas_sr_seed1", "c_fixed2x4_sr_seed0"]
    cmds = [["python", "-m", "inas_jax.main", "--strategy=inas", f"--workdir={tmp_path}/runs/{names[0]}"],
            ["python", "-m", "inas_jax.main", "--strategy=inas", f"--workdir={tmp_path}/runs/{names[1]}"],
            ["python", "-m", "inas_jax.main", "--strategy=fixed", "--arch=2,4", f"--workdir={tmp_path}/runs/{names[2]}"]]
    monkeypatch.setattr(study, "study", lambda name, npz, seeds: list(zip(names, cmds)))

    def rounds(hours):
        return [{"num_labelled": 1000 * (i + 1), "test_accuracy": 0.5 + 0.1 * i,
                 "cpu_seconds": {"search": 1800 * h, "train": 1800 * h, "query": 0.0}} for i, h in enumerate(hours)]

    runs = tmp_path / "results" / "tiny" / "runs"
    runs.mkdir(parents=True)
    (runs / f"{names[0]}.json").write_text(json.dumps({"rounds": rounds([0.5, 1.5])}))
    under_way = tmp_path / "runs" / names[1]
    under_way.mkdir(parents=True)
    (under_way / "results.json").write_text(json.dumps({"rounds": rounds([0.5])}))
    (under_way / "driver.log").write_text("first line\nround 2 candidate A(1,2) epoch 3/60\n")

    assert study.status(argparse.Namespace(study="tiny", npz=None, seeds=[0, 1])) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[1/3] c_inas_sr_seed0: done, test accuracy 0.6000 at 2,000 labels, 2.00 CPU h"
    assert out[1] == ("[2/3] c_inas_sr_seed1: under way, 1 rounds done (0.50 CPU h); "
                      "round 2 candidate A(1,2) epoch 3/60")
    assert out[2] == "[3/3] c_fixed2x4_sr_seed0: to run"
    assert out[3].startswith("2 runs unfinished: about 3.5 CPU hours left")  # (2.0 - 0.5) + 2.0


def test_status_leaves_round_1_out_of_the_estimate_for_runs_that_will_share_it(tmp_path, monkeypatch, capsys):
    """A run to do whose sibling (same flags but --query) kept its first round, or is an earlier run to
    do that will compute it, is estimated without round 1: here the finished runs' mean, 2.0 CPU h,
    of which round 1 took 0.5."""
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")

    def cmd(name, seed, query):
        return (name, ["python", "-m", "inas_jax.main", "--strategy=inas", f"--seed={seed}", f"--query={query}",
                       f"--workdir={tmp_path}/runs/{name}"])

    todo = [cmd("done_s0", 0, "sr"), cmd("new_s1_sr", 1, "sr"), cmd("new_s1_random", 1, "random"),
            cmd("new_s2_sr", 2, "sr"), cmd("kept_s3", 3, "sr"), cmd("new_s3_random", 3, "random")]
    monkeypatch.setattr(study, "study", lambda name, npz, seeds: todo)
    runs = tmp_path / "results" / "tiny" / "runs"
    runs.mkdir(parents=True)
    rounds = [{"num_labelled": 1000 * (i + 1), "test_accuracy": 0.5,
               "cpu_seconds": {"search": 1800 * h, "train": 1800 * h, "query": 0.0}} for i, h in enumerate([0.5, 1.5])]
    (runs / "done_s0.json").write_text(json.dumps({"rounds": rounds}))
    kept = tmp_path / "runs" / "kept_s3"
    (kept / study.FIRST_ROUND).mkdir(parents=True)
    (kept / "results.json").write_text(json.dumps({"rounds": rounds[:1]}))

    assert study.status(argparse.Namespace(study="tiny", npz=None, seeds=[0])) == 0
    out = capsys.readouterr().out.splitlines()
    # new_s1_sr 2.0, new_s1_random 1.5 (shares new_s1_sr's), new_s2_sr 2.0, kept_s3 2.0 - 0.5 spent,
    # new_s3_random 1.5 (shares kept_s3's)
    assert out[-1].startswith("5 runs unfinished: about 8.5 CPU hours left")


def test_verify_on_another_cpu_model_is_a_statistical_check(tiny_study, capsys, monkeypatch):
    """A run recorded on another CPU model is compared by its accuracies within binomial noise, and the
    output says it is not bit for bit; on the same model any difference is reported as before."""
    assert study.run(argparse.Namespace(study="tiny", npz=None, seeds=[3], jobs=1)) == 0
    committed = tiny_study / "results" / "tiny" / "runs" / "digits_fixed1x1_sr_seed3.json"
    results = json.loads(committed.read_text())
    assert results["rounds"][0]["environment"]["cpu_model"] == environment.cpu_model()[0]
    for r in results["rounds"]:
        r["environment"]["cpu_model"] = "Another CPU"
        r["labelled_sha1"] = "0" * 40  # bit-for-bit would fail; the statistical check reads accuracies only
    committed.write_text(json.dumps(results))
    assert _verify("digits_fixed1x1_sr_seed3") == 0
    out = capsys.readouterr().out
    assert "made on Another CPU" in out and "statistical check, not bit for bit" in out
    for r in results["rounds"]:
        r["test_accuracy"] = 0.0 if r["test_accuracy"] > 0.5 else 1.0
    committed.write_text(json.dumps(results))
    assert _verify("digits_fixed1x1_sr_seed3") == 1
    assert "NOT every round" in capsys.readouterr().out


def test_report_reads_the_runs_of_the_seeds_asked_for(tmp_path, monkeypatch):
    """`study.py report --seeds=0,1` reports the runs of seeds 0 and 1 only (a declared replication's seeds
    enter the report when the caller asks for them); without --seeds, every committed run."""
    monkeypatch.setattr(study, "RESULTS", tmp_path)
    study.runs_dir("s").mkdir(parents=True)
    for name, seed in [("a_seed0", 0), ("b_seed1", 1), ("a_seed3", 3)]:
        (study.runs_dir("s") / f"{name}.json").write_text(json.dumps({"config": {"seed": seed}}))
    names = lambda files: [os.path.basename(f) for f in files]  # noqa: E731
    assert names(study.report_files("s", [0, 1])) == ["a_seed0.json", "b_seed1.json"]
    assert names(study.report_files("s", None)) == ["a_seed0.json", "a_seed3.json", "b_seed1.json"]
    assert study.report_files("s", [7]) == []
