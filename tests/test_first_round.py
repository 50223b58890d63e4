"""Runs that differ only in their query function share the first round (--first_round_from): it is
searched and trained before any query, so a run started from another's gives the same results."""
import json

import pytest

from conftest import TINY, results_of, run_cli, without_timings

RUN = TINY + ["--checkpoint_seconds=0"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished iNAS + random run: its workdir."""
    workdir = tmp_path_factory.mktemp("random")
    assert run_cli(RUN + ["--query=random", f"--workdir={workdir}"]) == 0
    return workdir


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The iNAS + sr run from scratch: its results without timings."""
    workdir = tmp_path_factory.mktemp("alone")
    assert run_cli(RUN + ["--query=sr", f"--workdir={workdir}"]) == 0
    return without_timings(results_of(workdir))


def _trainings(monkeypatch):
    """Records (label, epoch resumed from) of every training active.run starts."""
    from inas_jax.loop import round as active
    real, calls = active.train, []

    def spy(*args, **kwargs):
        checkpoint = kwargs.get("checkpoint")
        calls.append((kwargs["label"], checkpoint.resume[0] if checkpoint and checkpoint.resume else 0))
        return real(*args, **kwargs)

    monkeypatch.setattr(active, "train", spy)
    return calls


def test_a_run_started_from_another_runs_first_round_equals_the_run_from_scratch(tmp_path, source, alone,
                                                                                   monkeypatch):
    kept = json.loads((source / "first_round" / "round_progress.json").read_text())
    calls = _trainings(monkeypatch)
    assert run_cli(RUN + ["--query=sr", f"--workdir={tmp_path / 'shared'}", f"--first_round_from={source}"]) == 0
    # the same records as the run from scratch, round 1's search and training included
    assert without_timings(results_of(tmp_path / "shared")) == alone
    # round 1 trained no candidate and resumed its final training at its last epoch (2)
    round1 = [c for c in calls if c[0].startswith("round 1")]
    assert len(round1) == 1 and "candidate" not in round1[0][0] and round1[0][1] == 2, round1
    # and it records the first round's phase times of the run it started from, as its own
    shared = results_of(tmp_path / "shared")["rounds"][0]["cpu_seconds"]
    assert shared["search"] >= kept["spent"]["cpu_seconds"]["search"] > 0


def test_a_first_round_that_ended_before_its_first_checkpoint_still_shares_its_search(tmp_path, alone,
                                                                                      monkeypatch):
    """With no checkpoint of the final training (it was shorter than --checkpoint_seconds), the kept
    candidate scores still spare the search; the final training runs again, with the same results."""
    src, calls = tmp_path / "src", _trainings(monkeypatch)
    assert run_cli(TINY + ["--query=random", f"--workdir={src}"]) == 0  # checkpoints every 60 s: none here
    assert not list((src / "first_round").glob("training/*"))
    calls.clear()
    assert run_cli(TINY + ["--query=sr", f"--workdir={tmp_path / 'new'}", f"--first_round_from={src}"]) == 0
    assert without_timings(results_of(tmp_path / "new")) == alone
    assert [c for c in calls if c[0].startswith("round 1")] == [(c[0], 0) for c in calls[:1]]
    assert "candidate" not in calls[0][0]


def test_a_source_with_other_settings_is_refused_in_one_line_naming_them(tmp_path, capsys):
    one_round = RUN + ["--query=random", "--strategy=fixed", "--arch=1,1", "--budget=40"]
    assert run_cli(one_round + ["--seed=1", f"--workdir={tmp_path / 'src'}"]) == 0
    capsys.readouterr()
    assert run_cli(one_round + ["--query=sr", f"--workdir={tmp_path / 'new'}",
                                f"--first_round_from={tmp_path / 'src'}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "is a run with other settings or data (config.seed: 1 -> 0)" in err[0], err


def test_a_source_recorded_before_xla_max_channels_existed_is_read_with_its_lowering(tmp_path, capsys):
    """A source whose config.json predates xla_max_channels ran with xla_max_channels=0: a run with that
    setting starts from it, one with the default is refused naming the setting."""
    one_round = RUN + ["--query=random", "--strategy=fixed", "--arch=1,1", "--budget=40", "--xla_max_channels=0"]
    assert run_cli(one_round + [f"--workdir={tmp_path / 'src'}"]) == 0
    stored = json.loads((tmp_path / "src" / "config.json").read_text())
    del stored["config"]["model"]["xla_max_channels"]
    (tmp_path / "src" / "config.json").write_text(json.dumps(stored))
    sr = [a for a in one_round if a != "--query=random"] + ["--query=sr", f"--first_round_from={tmp_path / 'src'}"]
    assert run_cli(sr + [f"--workdir={tmp_path / 'new'}"]) == 0
    capsys.readouterr()
    default = [a for a in sr if a != "--xla_max_channels=0"]
    assert run_cli(default + [f"--workdir={tmp_path / 'new2'}"]) == 2
    assert "model.xla_max_channels: 0 -> 16" in capsys.readouterr().err


def test_a_source_without_a_finished_first_round_is_refused(tmp_path, capsys, source):
    src = tmp_path / "src"  # a run of the same settings that has not finished its first round
    src.mkdir()
    (src / "config.json").write_text((source / "config.json").read_text())
    assert run_cli(RUN + ["--query=sr", f"--workdir={tmp_path / 'new'}", f"--first_round_from={src}"]) == 2
    assert "holds no finished first round to start from" in capsys.readouterr().err
