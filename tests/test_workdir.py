"""The workdir under hostile conditions: a second process, damaged files, other data, planted links,
interrupts and failed writes. Each case ends in one line, and the workdir stays resumable."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import SUBPROCESS_TIMEOUT, TINY, one_error_line, results_of, run_cli, without_timings
from inas_jax.store import RunStore
from inas_jax.config import from_preset

FIXED = TINY + ["--strategy=fixed", "--arch=1,1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run: (its flags, its results)."""
    workdir = tmp_path_factory.mktemp("finished")
    args = FIXED + [f"--workdir={workdir}"]
    assert run_cli(args) == 0
    return args, workdir, without_timings(results_of(workdir))


def test_a_second_run_on_a_locked_workdir_is_refused_naming_the_holder(tmp_path, capsys):
    holder = RunStore(tmp_path, from_preset())
    holder.open()
    try:
        assert run_cli(FIXED + [f"--workdir={tmp_path}"]) == 2
        assert f"in use by another run (pid {os.getpid()})" in one_error_line(capsys)
        assert sorted(os.listdir(tmp_path)) == [".lock", "config.json", "rounds", "training"]
    finally:
        holder.close()
    assert run_cli(FIXED + [f"--workdir={tmp_path}", "--preset=cpu"]) == 2  # other settings, lock now free
    assert "other settings" in one_error_line(capsys)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = ("import sys, os; from inas_jax.store import RunStore; from inas_jax.config import from_preset; "
            f"s = RunStore({str(tmp_path)!r}, from_preset()); s.open(); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, JAX_PLATFORMS="cpu"),
                          timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == -9
    store = RunStore(tmp_path, from_preset())
    store.open()  # the kernel released the dead process's lock
    store.close()


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_finished_run_rewrites_a_lost_results_json(tmp_path, finished, damage):
    args, workdir, want = finished
    if damage == "missing":
        (workdir / "results.json").unlink()
    else:
        (workdir / "results.json").write_text((workdir / "results.json").read_text()[:50])
    assert run_cli(args) == 0
    assert without_timings(results_of(workdir)) == want


@pytest.mark.parametrize("content,message", [
    ('{"config": {', "config.json' is unreadable"),
    ("[1, 2]", "expected an object"),
    ('{"config": {"seed": "zero"}, "data": {}}', "is unreadable (missing setting"),
])
def test_an_unreadable_config_json_is_one_error_line(tmp_path, capsys, finished, content, message):
    args, workdir, _ = finished
    broken = tmp_path / "w"
    broken.mkdir()
    (broken / "config.json").write_text(content)
    assert run_cli(FIXED + [f"--workdir={broken}"]) == 2
    assert message in one_error_line(capsys)


def test_a_config_json_of_wrong_types_is_one_error_line(tmp_path, capsys):
    assert run_cli(FIXED + ["--budget=40", f"--workdir={tmp_path}"]) == 0
    stored = json.loads((tmp_path / "config.json").read_text())
    stored["config"]["train"]["epochs"] = "2"
    (tmp_path / "config.json").write_text(json.dumps(stored))
    capsys.readouterr()
    assert run_cli(FIXED + ["--budget=40", f"--workdir={tmp_path}"]) == 2
    assert "train.epochs='2' is not of type int" in one_error_line(capsys)


def test_a_workdir_recorded_before_xla_max_channels_existed_resumes_with_its_lowering(tmp_path, capsys):
    """A config.json without xla_max_channels is a run made before the setting existed: it resumes
    under --xla_max_channels=0 (its lowering), and the default is refused as other settings."""
    args = FIXED + ["--budget=40", f"--workdir={tmp_path}"]
    assert run_cli(args + ["--xla_max_channels=0"]) == 0
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["config"]["model"]["xla_max_channels"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert run_cli(args + ["--xla_max_channels=0"]) == 0
    capsys.readouterr()
    assert run_cli(args) == 2
    assert "model.xla_max_channels: 0 -> 16" in one_error_line(capsys)


@pytest.mark.parametrize("name", ["rounds", "training"])
def test_a_checkpoint_directory_that_is_a_file_is_one_error_line(tmp_path, capsys, name):
    (tmp_path / name).write_text("not a directory")
    assert run_cli(FIXED + [f"--workdir={tmp_path}"]) == 2
    assert f"{name}' is not a directory" in one_error_line(capsys)


# One round of iNAS (three candidates and a final training).
ONE_ROUND = TINY + ["--budget=40", "--inas_epochs=1"]


@pytest.fixture(scope="module")
def one_round(tmp_path_factory):
    """The one-round iNAS run uninterrupted: its results without timings."""
    workdir = tmp_path_factory.mktemp("one_round")
    assert run_cli(ONE_ROUND + [f"--workdir={workdir}"]) == 0
    return without_timings(results_of(workdir))


@pytest.mark.parametrize("content", ["garbage{", '{"round": 0, "scores": [[[99, 1], 0.5]]}', '{"round": 0}'])
def test_a_damaged_round_progress_file_is_discarded_and_recomputed(tmp_path, capsys, one_round, content):
    want = one_round
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "round_progress.json").write_text(content)
    capsys.readouterr()
    assert run_cli(ONE_ROUND + [f"--workdir={cut}"]) == 0
    assert "round_progress.json is unreadable" in capsys.readouterr().err
    assert without_timings(results_of(cut)) == want


def test_json_writes_never_follow_a_planted_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    workdir = tmp_path / "w"
    workdir.mkdir()
    for name in ("results.json.tmp", "config.json.tmp", "round_progress.json.tmp"):
        os.symlink(victim, workdir / name)
    assert run_cli(TINY + ["--budget=40", f"--workdir={workdir}"]) == 0
    assert victim.read_text() == "precious"
    assert not [p for p in os.listdir(workdir) if p.endswith(".tmp") and not os.path.islink(workdir / p)]


def _npz(path, seed):
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.integers(0, 256, (100, 8, 8, 1), np.uint8), y_train=np.arange(100) % 10,
             x_test=rng.integers(0, 256, (20, 8, 8, 1), np.uint8), y_test=np.arange(20) % 10)


def test_resuming_on_other_data_is_refused(tmp_path, capsys):
    data = tmp_path / "data.npz"
    _npz(data, 0)
    args = FIXED + ["--budget=40", f"--dataset=npz:{data}", f"--workdir={tmp_path / 'w'}"]
    assert run_cli(args) == 0
    _npz(data, 1)  # the same path, other images
    capsys.readouterr()
    assert run_cli(args) == 2
    line = one_error_line(capsys)
    assert "other settings or data" in line and "data.sha256" in line


def test_ctrl_c_is_one_line_and_exit_130_then_resumes(tmp_path, capsys, monkeypatch, finished):
    from conftest import crash_at_epoch_call
    args, _, want = finished
    crash_at_epoch_call(monkeypatch, 2)
    assert run_cli(FIXED + [f"--workdir={tmp_path}"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    monkeypatch.undo()
    assert run_cli(FIXED + [f"--workdir={tmp_path}"]) == 0
    assert without_timings(results_of(tmp_path)) == want


def test_a_failed_write_is_one_error_line_and_the_workdir_stays_resumable(tmp_path, capsys, monkeypatch, finished):
    from inas_jax.store import rounds
    _, _, want = finished
    real = rounds.write_json

    def full_disk(path, obj):
        if path.name == "results.json":
            raise OSError(28, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(rounds, "write_json", full_disk)
    assert run_cli(FIXED + [f"--workdir={tmp_path}"]) == 1
    line = one_error_line(capsys)
    assert "results.json: No space left on device" in line and "resumable" in line
    monkeypatch.undo()
    assert run_cli(FIXED + [f"--workdir={tmp_path}"]) == 0
    assert without_timings(results_of(tmp_path)) == want


def test_a_non_finite_test_loss_is_an_error_and_never_a_result(tmp_path, capsys, monkeypatch):
    from inas_jax.loop import round as active
    monkeypatch.setattr(active, "evaluate", lambda *a, **k: {"accuracy": 0.1, "loss": float("nan")})
    assert run_cli(FIXED + [f"--workdir={tmp_path}"]) == 1
    assert "test loss is nan" in one_error_line(capsys)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("args,message", [
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--epochs=many"], "flag --epochs=many"),
    (["--multihost"], "--multihost: jax.distributed.initialize() failed"),
])
def test_flag_errors_of_the_real_command_are_one_line(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "inas_jax.main", *args, f"--workdir={tmp_path / 'w'}"],
                          capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                          timeout=SUBPROCESS_TIMEOUT)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], \
        proc.stderr
    assert not (tmp_path / "w").exists()
