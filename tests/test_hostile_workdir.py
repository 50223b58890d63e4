"""Reliability III: resources bounded before work starts, no write through a planted link, a compilation
cache that trusts nobody else, and nothing read back from a workdir trusted without a check. Each
case ends in one `error:` line (exit 2) or one warning and the uninterrupted results."""
import json
import math
import os
import pathlib
import shutil

import numpy as np
import pytest

from conftest import TINY, one_error_line, results_of, run_cli, without_timings

FIXED = TINY + ["--strategy=fixed", "--arch=1,1", "--checkpoint_seconds=0"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny fixed run uninterrupted: its workdir, which tests copy and leave as it is."""
    workdir = tmp_path_factory.mktemp("whole")
    assert run_cli(FIXED + [f"--workdir={workdir}"]) == 0
    return workdir


@pytest.fixture(scope="module")
def whole(finished):
    """The tiny fixed run uninterrupted: its results without timings."""
    return without_timings(results_of(finished))


@pytest.mark.parametrize("args,flag", [
    (["--batch_size=1000000", "--epoch_size=1000000", "--initial_size=1000", "--budget=1200"], "--batch_size"),
    (["--eval_batch_size=100000000"], "--eval_batch_size"),
    (["--query=bald", "--mc_passes=1000000"], "--mc_passes"),
    (["--query=mcdropout", "--mc_passes=1000000"], "--mc_passes"),
])
def test_flags_beyond_memory_are_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, args, flag):
    cache = tmp_path / "cache"
    monkeypatch.setenv("INAS_JAX_COMPILATION_CACHE", str(cache))
    assert run_cli(TINY + args + [f"--workdir={tmp_path / 'w'}", f"--compilation_cache={cache}"]) == 2
    line = one_error_line(capsys)
    assert flag in line and ("at most" in line or "exceeds" in line), line
    assert not (tmp_path / "w").exists() and not cache.exists()  # the cache is made only after every check


def test_memory_bound_names_the_largest_value_that_fits():
    from inas_jax.config import ConfigError, RunConfig
    from inas_jax.runtime import resources
    from inas_jax.queries import uncertainty
    assert resources.MC_CHUNK == uncertainty.MC_CHUNK
    cfg = RunConfig(query="bald", mc_passes=1000)
    need = 4 * 1300 * (cfg.model.width + 2 * 10)  # one pass over a 1,300-point pool
    resources.check_memory(cfg, (8, 8, 1), 10, 1300, memory=int(2 * need * 1000))
    with pytest.raises(ConfigError, match=r"--mc_passes=1000: .* use at most --mc_passes=999"):
        resources.check_memory(cfg, (8, 8, 1), 10, 1300, memory=int(2 * need * 999.5))


def test_an_empty_workdir_flag_is_an_error_not_the_default(capsys):
    assert run_cli(FIXED + ["--workdir="]) == 2
    assert "--workdir is empty" in one_error_line(capsys)


def test_a_planted_write_probe_link_is_never_written_through(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me")
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / ".write_probe").symlink_to(target)
    assert run_cli(FIXED + [f"--workdir={workdir}", "--seed=1000"]) == 0
    assert target.read_text() == "keep me"


def test_a_planted_first_round_staging_link_keeps_everything_inside_the_workdir(tmp_path, whole):
    outside = tmp_path / "outside"
    outside.mkdir()
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "first_round.tmp").symlink_to(outside)
    assert run_cli(FIXED + [f"--workdir={workdir}"]) == 0
    assert list(outside.iterdir()) == []
    assert (workdir / "first_round").is_dir() and not (workdir / "first_round").is_symlink()
    assert without_timings(results_of(workdir)) == whole


@pytest.mark.parametrize("kind", ["directory", "link"])
def test_a_lock_that_is_not_a_file_is_one_line(tmp_path, capsys, kind):
    workdir = tmp_path / "w"
    workdir.mkdir()
    if kind == "directory":
        (workdir / ".lock").mkdir()
    else:
        (workdir / ".lock").symlink_to(tmp_path / "elsewhere")
    assert run_cli(FIXED + [f"--workdir={workdir}"]) == 2
    assert ".lock" in one_error_line(capsys)
    assert not (tmp_path / "elsewhere").exists()


def test_a_workdir_name_over_255_bytes_is_one_line(tmp_path, capsys):
    assert run_cli(FIXED + [f"--workdir={tmp_path / ('x' * 300)}"]) == 2
    assert "not writable" in one_error_line(capsys)


def test_stale_temporary_files_of_a_killed_write_are_removed(tmp_path, finished):
    workdir = tmp_path / "w"
    shutil.copytree(finished, workdir)  # a finished run's workdir, as the run left it
    stale = workdir / ".results.json.abc123.tmp"
    stale.write_text("{half")
    assert run_cli(FIXED + [f"--workdir={workdir}"]) == 0
    assert not stale.exists()


@pytest.mark.parametrize("mode,owner,shared,ok", [
    (0o700, None, False, True), (0o777, None, False, False), (0o770, None, False, False),
    (0o770, None, True, True), (0o777, None, True, False), (0o700, 12345, False, False), (0o750, 12345, True, True)])
def test_the_compilation_cache_refuses_a_directory_others_may_write(tmp_path, monkeypatch, mode, owner, shared, ok):
    from inas_jax.runtime.compilation import CacheError, check_cache_dir
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, mode)
    if owner is not None:
        if os.getuid() != 0:
            pytest.skip("changing a directory's owner needs root")
        os.chown(cache, owner, -1)
    if shared:
        monkeypatch.setenv("INAS_JAX_SHARED_CACHE", "1")
    if ok:
        check_cache_dir(str(cache))
    else:
        with pytest.raises(CacheError, match="compilation cache"):
            check_cache_dir(str(cache))


def test_an_untrusted_cache_is_refused_by_the_driver_in_one_line(tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, 0o777)
    assert run_cli(FIXED + [f"--workdir={tmp_path / 'w'}", f"--compilation_cache={cache}"]) == 2
    assert "writable by every user" in one_error_line(capsys)
    assert not (tmp_path / "w").exists()


def _resume_after(tmp_path, finished, whole, capsys, damage, warning: str):
    workdir = tmp_path / "w"
    shutil.copytree(finished, workdir)  # a finished run's workdir, as the run left it
    damage(workdir)
    (workdir / "results.json").unlink()
    capsys.readouterr()
    assert run_cli(FIXED + [f"--workdir={workdir}"]) == 0
    err = capsys.readouterr().err
    assert warning in err, err
    assert without_timings(results_of(workdir)) == whole


def test_labelled_indices_outside_the_pool_are_not_resumed(tmp_path, finished, whole, capsys):
    from inas_jax.config import from_preset
    from inas_jax.loop.state import PoolState
    from inas_jax.model.search_space import Arch
    from inas_jax.store.rounds import RoundCheckpoints

    def plant(workdir):
        shutil.rmtree(workdir / "rounds" / "2")
        store = RoundCheckpoints(workdir, from_preset().replace(initial_size=40, query_sizes=(20,), budget=60))
        store.save(PoolState(labelled_idx=np.arange(10 ** 6, 10 ** 6 + 60, dtype=np.int32), round=2,
                             arch=Arch(1, 1), history=({}, {})))
        store.close()
    _resume_after(tmp_path, finished, whole, capsys, plant, "outside the pool")


def test_edited_round_history_is_caught_by_its_checksum(tmp_path, finished, whole, capsys):
    def edit(workdir):
        meta_file = workdir / "rounds" / "2" / "meta" / "metadata"
        meta = json.loads(meta_file.read_text())
        meta["history"][0]["test_accuracy"] = 0.99  # other, valid JSON
        meta_file.write_text(json.dumps(meta))
    _resume_after(tmp_path, finished, whole, capsys, edit, "checksum")


@pytest.mark.parametrize("score", [math.nan, -1e9, 2.0])
def test_round_progress_values_out_of_range_are_discarded(tmp_path, score):
    from inas_jax.model.search_space import Arch
    from inas_jax.store import rounds
    path = tmp_path / "round_progress.json"
    path.write_text(json.dumps({"round": 0, "scores": [[[1, 1], score]], "spent": {}}))
    assert rounds.read_progress(path, 0) == rounds.NO_PROGRESS and not path.exists()
    path.write_text(json.dumps({"round": 0, "scores": [[[1, 1], 0.5]], "spent": {"seconds": {"search": -1e9}}}))
    assert rounds.read_progress(path, 0) == rounds.NO_PROGRESS
    path.write_text(json.dumps({"round": 0, "scores": [[[1, 1], 0.5]], "spent": {"seconds": {"search": 3.0}}}))
    assert rounds.read_progress(path, 0)["scores"] == {Arch(1, 1): 0.5}


def test_a_training_checkpoint_of_another_network_is_not_resumed(tmp_path, whole, capsys, monkeypatch):
    """A mid-training checkpoint of the same tree but other shapes (width 8 into a width-4 run) is
    refused with one warning, and that training starts over."""
    from conftest import crash_at_epoch_call
    from inas_jax.loop import train as train_mod
    other = tmp_path / "other"
    real = crash_at_epoch_call(monkeypatch, 2)
    assert run_cli(FIXED + ["--width=8", f"--workdir={other}"]) == 130
    monkeypatch.setattr(train_mod, "train_epoch", real)
    workdir = tmp_path / "w"
    real = crash_at_epoch_call(monkeypatch, 2)
    assert run_cli(FIXED + [f"--workdir={workdir}"]) == 130
    monkeypatch.setattr(train_mod, "train_epoch", real)
    for step in (workdir / "training").iterdir():
        shutil.rmtree(step)
        shutil.copytree(next((other / "training").iterdir()), step)
    capsys.readouterr()
    assert run_cli(FIXED + [f"--workdir={workdir}"]) == 0
    assert "not this network's" in capsys.readouterr().err
    assert without_timings(results_of(workdir)) == whole


def _results(tmp_path, **changes) -> pathlib.Path:
    run = {"config": {"dataset": "digits", "query": "sr", "strategy": "fixed", "seed": 0, "arch": [1, 1]},
           "rounds": [{"num_labelled": 40, "test_accuracy": 0.5, "cpu_seconds": {"search": 1.0}},
                      {"num_labelled": 60, "test_accuracy": 0.6}]}
    for path, value in changes.items():
        where, key = run, path.split("__")
        for k in key[:-1]:
            where = where[int(k)] if k.isdigit() else where[k]
        where[key[-1]] = value
    file = tmp_path / "results.json"
    file.write_text(json.dumps(run) if "raw" not in changes else changes["raw"])
    return file


@pytest.mark.parametrize("changes,message", [
    (dict(config__query="../../escape"), "config has query"),
    (dict(config__query="a/b"), "config has query"),
    (dict(rounds__0__cpu_seconds="12"), "cpu_seconds"),
    (dict(rounds__1__num_labelled=10 ** 400), "num_labelled"),
])
def test_the_report_refuses_a_bad_results_file_before_writing_anything(tmp_path, capsys, changes, message):
    from inas_jax.report.cli import main
    file = _results(tmp_path, **changes)
    out = tmp_path / "out"
    assert main([f"--out={out}", str(file)]) == 2
    line = one_error_line(capsys)
    assert str(file) in line and message in line, line
    assert not out.exists() or not any(out.iterdir())
    assert not (tmp_path / "escape").exists()


def test_the_report_replaces_a_planted_link_never_writes_through_it(tmp_path):
    from inas_jax.report.cli import main
    file = _results(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious"
    target.write_text("keep me")
    (out / "summary.md").symlink_to(target)
    assert main([f"--out={out}", str(file)]) == 0
    assert target.read_text() == "keep me"
    assert not (out / "summary.md").is_symlink() and "digits" in (out / "summary.md").read_text()


def test_report_file_names_from_data_are_safe():
    from inas_jax.report.checking import safe_name
    assert safe_name("../../x") == ".._.._x" and "/" not in safe_name("a/b") and safe_name("..") == "_.."


def test_the_same_npz_spelled_otherwise_or_recompressed_resumes_other_arrays_do_not(tmp_path, digits, capsys,
                                                                                   monkeypatch):
    arrays = dict(x_train=digits.x_train, y_train=digits.y_train, x_test=digits.x_test, y_test=digits.y_test)
    np.savez(tmp_path / "d.npz", **arrays)
    workdir = tmp_path / "w"
    assert run_cli(FIXED + [f"--dataset=npz:{tmp_path / 'd.npz'}", f"--workdir={workdir}"]) == 0
    np.savez_compressed(tmp_path / "d.npz", **arrays)  # other bytes on disk, the same arrays
    monkeypatch.chdir(tmp_path)
    assert run_cli(FIXED + ["--dataset=npz:./d.npz", f"--workdir={workdir}"]) == 0
    arrays["x_test"] = arrays["x_test"][::-1].copy()  # the test split alone changes
    np.savez(tmp_path / "d.npz", **arrays)
    capsys.readouterr()
    assert run_cli(FIXED + ["--dataset=npz:d.npz", f"--workdir={workdir}"]) == 2
    assert "other settings or data" in one_error_line(capsys)


def _npz_member(path, header_shape, payload_bytes, compress=False):
    import io
    import zipfile
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": header_shape})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            z.writestr(f"{key}.npy", buf.getvalue() + b"\0" * payload_bytes)


@pytest.mark.parametrize("case,message", [("huge header", "more than half"), ("zip bomb", "declares")])
def test_an_npz_too_large_for_memory_is_refused_before_it_is_read(tmp_path, capsys, case, message):
    path = tmp_path / "x.npz"
    if case == "huge header":
        _npz_member(path, (10 ** 6, 1000, 1000, 1), 100)
    else:  # 3 MB on disk, 100 MB of zeros inside, under a header of 10 bytes
        _npz_member(path, (10,), 100 * 2 ** 20, compress=True)
    assert run_cli(FIXED + [f"--dataset=npz:{path}", f"--workdir={tmp_path / 'w'}"]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "w").exists()
