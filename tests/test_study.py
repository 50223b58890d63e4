"""experiments/study.py end to end on tiny digits runs: run, skip when done, verify, detect a change."""
import argparse
import json
import sys

import pytest

sys.path.insert(0, "experiments")
import study  # noqa: E402

from conftest import TINY  # noqa: E402


@pytest.fixture
def tiny_study(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")

    def tiny(name, npz, seeds):
        return [(f"digits_fixed1x1_sr_seed{s}",
                 [sys.executable, "-m", "inas_jax.main", *TINY, "--budget=60", "--strategy=fixed", "--arch=1,1",
                  f"--seed={s}", f"--workdir={tmp_path}/runs/digits_fixed1x1_sr_seed{s}"]) for s in seeds]

    monkeypatch.setattr(study, "study", tiny)
    return tmp_path


def test_run_then_verify_reproduces_and_catches_a_changed_result(tiny_study, capsys):
    assert study.run(argparse.Namespace(study="tiny", npz=None, seeds=[3])) == 0
    committed = tiny_study / "results" / "tiny" / "runs" / "digits_fixed1x1_sr_seed3.json"
    rounds = json.loads(committed.read_text())["rounds"]
    assert len(rounds) == 2 and all(len(r["labelled_sha1"]) == 40 for r in rounds)
    assert study.run(argparse.Namespace(study="tiny", npz=None, seeds=[3])) == 0  # finished: skipped, not rerun
    assert "done" in capsys.readouterr().out

    assert study.verify(argparse.Namespace(study="tiny", npz=None, name="digits_fixed1x1_sr_seed3")) == 0
    assert "reproduced" in capsys.readouterr().out

    results = json.loads(committed.read_text())
    results["rounds"][1]["labelled_sha1"] = "0" * 40
    committed.write_text(json.dumps(results))
    assert study.verify(argparse.Namespace(study="tiny", npz=None, name="digits_fixed1x1_sr_seed3")) == 1
    assert "round 2 labelled_sha1" in capsys.readouterr().out
