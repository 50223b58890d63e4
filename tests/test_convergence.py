"""experiments/convergence.py: a cell interrupted mid-training resumes from its checkpoint to the same result."""
import sys

import pytest

sys.path.insert(0, "experiments")
import convergence  # noqa: E402

from conftest import TINY_SETTINGS, crash_at_epoch_call  # noqa: E402
from inas_jax.model.search_space import Arch  # noqa: E402

SETTINGS = {name: TINY_SETTINGS[name] for name in ("width", "batch_size", "epoch_size")}


def test_interrupted_cell_resumes_to_the_uninterrupted_result(digits, tmp_path, monkeypatch):
    monkeypatch.setattr(convergence, "CHECKPOINT_SECONDS", 0.0)
    args = (digits, Arch(1, 1), 60, 4 * 128, SETTINGS, 0, "cpu")
    whole = convergence.cell(*args, tmp_path / "whole")
    assert whole["resumed_at_epoch"] == 0 and whole["environment"]["cpu_threads"] >= 1
    assert list((tmp_path / "whole").iterdir()) == []  # the finished cell's checkpoints are removed

    from inas_jax.loop import train as train_mod
    real_epoch = crash_at_epoch_call(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        convergence.cell(*args, tmp_path / "cut")
    (checkpoints,) = (tmp_path / "cut").iterdir()
    assert max(int(p.name) for p in (checkpoints / "training").iterdir()) == 2
    monkeypatch.setattr(train_mod, "train_epoch", real_epoch)
    resumed = convergence.cell(*args, tmp_path / "cut")
    assert resumed["resumed_at_epoch"] == 2
    for key in ("test_accuracy", "test_loss", "final_train_loss", "samples", "labels", "arch"):
        assert resumed[key] == whole[key]
    assert list((tmp_path / "cut").iterdir()) == []


def test_table_keeps_seeds_apart():
    def c(samples, seed, acc):
        return {"arch": [2, 4], "labels": 1000, "samples": samples, "seed": seed, "test_accuracy": acc}

    rows = convergence.table([c(1, 0, 0.48), c(2, 0, 0.49), c(1, 1, 0.50), c(2, 1, 0.495)]).splitlines()[2:]
    assert rows == ["| A(2,4) | 1,000 | 0 | 1: 0.4800; 2: 0.4900 (+1.0) |",
                    "| A(2,4) | 1,000 | 1 | 1: 0.5000; 2: 0.4950 (-0.5) |"]
