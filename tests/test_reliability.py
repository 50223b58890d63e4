"""Crash safety, corrupted checkpoints, divergence, determinism and bad input, through the driver."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import SUBPROCESS_TIMEOUT, TINY, crash_at_epoch_call, results_of, run_cli, without_timings

HERE = pathlib.Path(__file__).parent
# iNAS, 3 rounds (40, 60, 80 labels), each of 3 candidates and a final training of 2 epochs (4 steps
# each), an epoch checkpoint after every epoch: the tiny run's compiled programs (its schedule), with a
# checkpoint inside every training to resume from.
RUN = TINY + ["--budget=80", "--query=sr", "--checkpoint_seconds=0", "--inas_epochs=2"]


def _child(site, n, delay, workdir):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(HERE / "crash_child.py"), site, str(n), str(delay), *RUN,
                           f"--workdir={workdir}"], env=env, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run uninterrupted: its workdir and its results without timings."""
    workdir = tmp_path_factory.mktemp("whole")
    assert run_cli(RUN + [f"--workdir={workdir}"]) == 0
    return workdir, without_timings(results_of(workdir))


# One SIGKILL in each phase where a run holds work not yet committed, each resumed by the next child
# (crash_child.py's sites), then one at a moment the test does not choose.
KILLS = [("step", 6, 0.0),         # mid-epoch: round 1's first candidate, in its 2nd epoch (steps 5-8)
         ("save", 2, 0.01),        # during the write of a training checkpoint (every epoch)
         ("round_save", 1, 0.01),  # during the write of round 1's checkpoint, its commit
         ("query", 2, 0.0),        # round 2's picks made, before the round is committed
         ("time", 0, 3.0)]         # wherever the run is 3 s after its start (maybe still importing)


def test_sigkills_in_every_phase_then_same_results(tmp_path, uninterrupted):
    """SIGKILL inside a training step, during a training checkpoint's and a round checkpoint's writes,
    after a query and at a random moment; resumed each time, the run ends with the uninterrupted
    results (and labelled order)."""
    for site, n, delay in KILLS:
        proc = _child(site, n, delay, tmp_path)
        assert proc.returncode == -9 or (site == "time" and proc.returncode == 0), (site, proc.stderr[-2000:])
    final = _child("none", 0, 0, tmp_path)
    assert final.returncode == 0, final.stderr[-2000:]
    got = without_timings(results_of(tmp_path))
    assert got["labelled"] == uninterrupted[1]["labelled"]
    assert got == uninterrupted[1]


def _corrupt_arrays(step_dir: pathlib.Path):
    for f in (step_dir / "arrays").rglob("*"):
        if f.is_file() and f.name != "commit_success.txt":
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])


@pytest.mark.parametrize("damage", ["truncate_arrays", "garbage_meta", "wrong_labelled"])
def test_corrupted_latest_round_falls_back_with_warning(tmp_path, uninterrupted, capsys, damage):
    finished, want = uninterrupted
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)  # the finished run's workdir, as the run left it
    latest = tmp_path / "rounds" / "3"
    if damage == "truncate_arrays":
        _corrupt_arrays(latest)
    elif damage == "garbage_meta":
        (latest / "meta" / "metadata").write_text('{"round": 3, "arch": [1,')
    else:  # a checkpoint that reads fine but does not match its round
        meta = json.loads((latest / "meta" / "metadata").read_text())
        meta["round"] = 2
        (latest / "meta" / "metadata").write_text(json.dumps(meta))
    capsys.readouterr()
    assert run_cli(RUN + [f"--workdir={tmp_path}"]) == 0
    err = capsys.readouterr().err
    assert "round checkpoint 3" in err and "unreadable" in err and "resuming" in err
    assert without_timings(results_of(tmp_path)) == want


def test_corrupted_training_checkpoint_restarts_that_training(tmp_path, uninterrupted, monkeypatch, capsys):
    from inas_jax.loop import train as train_mod
    real = crash_at_epoch_call(monkeypatch, 16)  # round 2, final training epoch 2 (3 candidates x 2 + 2 per round)
    assert run_cli(RUN + [f"--workdir={tmp_path}"]) == 130  # interrupted
    monkeypatch.setattr(train_mod, "train_epoch", real)
    steps = list((tmp_path / "training").iterdir())
    assert steps
    for step in steps:
        for f in step.rglob("*"):
            if f.is_file() and f.name != "commit_success.txt":
                f.write_bytes(b"\0garbage")
    capsys.readouterr()
    assert run_cli(RUN + [f"--workdir={tmp_path}"]) == 0
    assert "training checkpoint" in capsys.readouterr().err
    assert without_timings(results_of(tmp_path)) == uninterrupted[1]


def _refuse_non_finite(constant):
    raise AssertionError(f"results.json holds {constant}")


def test_divergence_stops_with_a_clear_message_and_no_nan_result(tmp_path, capsys, monkeypatch):
    assert run_cli(TINY + ["--lr=1e30", "--strategy=fixed", "--arch=1,1", f"--workdir={tmp_path / 'first'}"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "training loss is" in err
    assert not (tmp_path / "first" / "results.json").exists()  # round 1 diverged: no round to report
    # A divergence in round 2 (its training losses made NaN): round 1's results stand, with no NaN in them.
    from inas_jax.loop import train as train_mod
    real, calls = train_mod.train_epoch, []

    def diverging(*args, **kwargs):
        calls.append(1)
        state, losses, accs = real(*args, **kwargs)
        return state, (losses * np.nan if len(calls) > 2 else losses), accs  # round 1 trained 2 epochs

    monkeypatch.setattr(train_mod, "train_epoch", diverging)
    assert run_cli(TINY + ["--strategy=fixed", "--arch=1,1", f"--workdir={tmp_path / 'second'}"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "round 2" in err[0] and "training loss is nan" in err[0], err
    results = json.loads((tmp_path / "second" / "results.json").read_text(), parse_constant=_refuse_non_finite)
    assert [r["round"] for r in results["rounds"]] == [1] and not results["finished"]


def test_same_seed_same_run_and_other_seed_differs(tmp_path, uninterrupted):
    """The run again in this process (the module's uninterrupted run went first) is the same run; with
    another seed it is another."""
    runs = [uninterrupted[1]]
    for name, seed in (("b", 0), ("c", 1)):
        assert run_cli(RUN + [f"--seed={seed}", f"--workdir={tmp_path / name}"]) == 0
        runs.append(without_timings(results_of(tmp_path / name)))
    assert runs[0] == runs[1]
    assert runs[0]["labelled"] != runs[2]["labelled"]
    assert [r["test_accuracy"] for r in runs[0]["rounds"]] != [r["test_accuracy"] for r in runs[2]["rounds"]]


def _npz(tmp_path, **arrays):
    base = dict(x_train=np.zeros((100, 8, 8, 1), np.uint8), y_train=np.arange(100) % 10,
                x_test=np.zeros((20, 8, 8, 1), np.uint8), y_test=np.arange(20) % 10)
    base.update(arrays)
    path = tmp_path / "data.npz"
    np.savez(path, **base)
    return f"--dataset=npz:{path}"


BAD_FLAGS = [
    (["--dataset=mnist"], "unknown dataset 'mnist'"),
    (["--query=uncertainty"], "--query='uncertainty' is unknown"),
    (["--strategy=grow"], "--strategy='grow' is unknown"),
    (["--strategy=fixed"], "needs --arch"),
    (["--arch=13,1"], "outside the grid"),
    (["--arch=2,6"], "outside the grid"),
    (["--arch=two"], "cannot parse architecture 'two'"),
    (["--budget=100000"], "--budget=100000 exceeds the pool"),
    (["--initial_size=0"], "--initial_size=0 must be positive"),
    (["--initial_size=-5"], "--initial_size=-5 must be positive"),
    (["--initial_size=100", "--budget=60"], "--initial_size=100 exceeds --budget=60"),
    (["--query_sizes=0"], "--query_sizes=0 must be positive"),
    (["--query_sizes=20,-1"], "--query_sizes=20,-1 must be positive"),
    (["--query_sizes=30"], "--query_sizes=30 overrun the budget"),
    (["--query_sizes=10,x"], "comma-separated list of integers"),
    (["--epochs=0"], "--epochs=0 must be positive"),
    (["--epochs=-3"], "--epochs=-3 must be positive"),
    (["--inas_epochs=0"], "--inas_epochs=0 must be positive"),
    (["--preset=huge"], "--preset='huge' is unknown"),
    (["--checkpoint_seconds=-1"], "--checkpoint_seconds=-1.0 must be a finite number >= 0"),
    (["--checkpoint_seconds=nan"], "--checkpoint_seconds=nan must be a finite number >= 0"),
    (["--lr=nan"], "--lr=nan must be a finite number"),
    (["--max_rotation=inf"], "--max_rotation=inf must be a finite number"),
    (["--seed=4294967296"], "--seed=4294967296 must be in 0..2147483647"),
    (["--seed=99999999999999999999999"], "must be in 0..2147483647"),
    (["--dropout=1"], "--dropout=1.0 must be in [0, 1)"),
    (["--conv_impl=im2col"], "--conv_impl='im2col' is unknown"),
]


@pytest.mark.parametrize("args,message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, message):
    workdir = tmp_path / "w"
    assert run_cli(TINY + args + [f"--workdir={workdir}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not workdir.exists()


BAD_NPZ = [
    (dict(x_train=np.zeros((100, 8, 8, 1, 1), np.uint8)), "expected (N, H, W, C)"),
    (dict(x_train=np.zeros((100, 8, 8, 1), np.int16)), "dtype int16"),
    (dict(y_train=np.arange(100) - 1), "negative label"),
    (dict(y_test=np.arange(20) * 100), "has label 1900 but y_train's labels are 0..9"),
    (dict(y_train=np.arange(99) % 10), "100 images but y_train has 99"),
    (dict(x_test=np.full((20, 8, 8, 1), np.nan, np.float32)), "NaN"),
    (dict(x_test=np.array([{"evil": 1}] * 20, dtype=object)), "pickled"),
]



@pytest.mark.parametrize("arrays,message", BAD_NPZ, ids=[m for _, m in BAD_NPZ])
def test_bad_npz_exits_2_with_one_line(tmp_path, capsys, arrays, message):
    workdir = tmp_path / "w"
    assert run_cli(TINY + [_npz(tmp_path, **arrays), f"--workdir={workdir}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not workdir.exists()


def test_unreadable_npz_and_bad_workdirs(tmp_path, capsys, monkeypatch):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 truncated")
    assert run_cli(TINY + [f"--dataset=npz:{garbage}", f"--workdir={tmp_path / 'w'}"]) == 2
    assert "cannot be read" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert run_cli(TINY + [f"--workdir={a_file}"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert run_cli(TINY + [f"--workdir={a_file / 'sub'}"]) == 2
    assert "is not writable" in capsys.readouterr().err

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("inas_jax.main.tempfile.mkstemp", refuse)
    assert run_cli(TINY + [f"--workdir={tmp_path / 'ro'}"]) == 2
    assert "is not writable: Permission denied" in capsys.readouterr().err
    assert not (tmp_path / "ro").exists()


def test_real_command_reports_bad_flag_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "inas_jax.main", "--query=uncertainty"], capture_output=True, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 2
    from inas_jax.queries import QUERIES
    assert proc.stderr.strip().splitlines() == ["error: --query='uncertainty' is unknown: choose one of "
                                                + ", ".join(QUERIES)]
