import jax
import numpy as np
import pytest

from inas_jax import active
from inas_jax.config import ConfigError, RunConfig, differences, validate
from inas_jax.data import Dataset
from inas_jax.train import TrainConfig

TINY_TRAIN = TrainConfig(epochs=1, epoch_size=64, batch_size=32, width=4, flip=False, max_shift=0, max_rotation=0.0)


def test_paper_schedule():
    cfg = RunConfig(initial_size=2000, query_sizes=(2000, 2000, 2000, 2000, 5000), budget=50_000)
    assert cfg.schedule() == [2000, 4000, 6000, 8000, 10000] + list(range(15000, 50001, 5000))


def test_schedule_single_size_and_truncation_at_budget():
    assert RunConfig(initial_size=100, query_sizes=(100,), budget=350).schedule() == [100, 200, 300, 350]
    assert RunConfig(initial_size=5000, query_sizes=(5000, 5000, 5000, 30000), budget=50000).schedule() == \
        [5000, 10000, 15000, 20000, 50000]


def test_initial_set_depends_only_on_pool_k_and_seed():
    a = active.initial_state(RunConfig(strategy="inas", query="sr", seed=3, initial_size=20), 500)
    b = active.initial_state(RunConfig(strategy="fixed", arch=(2, 4), query="coreset", seed=3, initial_size=20), 500)
    np.testing.assert_array_equal(a.labelled, b.labelled)
    c = active.initial_state(RunConfig(seed=4, initial_size=20), 500)
    assert not np.array_equal(a.labelled, c.labelled) and len(set(a.labelled.tolist())) == 20


@pytest.mark.parametrize("changes,message", [
    (dict(query="entropy"), "--query='entropy' is unknown"),
    (dict(strategy="grow"), "--strategy='grow' is unknown"),
    (dict(arch=(13, 1)), "outside the grid"),
    (dict(initial_size=0), "--initial_size=0 must be positive"),
    (dict(query_sizes=(100, -5)), "--query_sizes=100,-5"),
    (dict(budget=50, initial_size=100), "--initial_size=100 exceeds --budget=50"),
    (dict(train=TrainConfig(epochs=0)), "--epochs=0 must be positive"),
    (dict(budget=5000), "--budget=5000 exceeds the pool"),
])
def test_validation_names_the_bad_setting(changes, message):
    with pytest.raises(ConfigError, match=message):
        validate(RunConfig(**changes), pool_size=1300)


def test_config_round_trip_and_differences():
    cfg = RunConfig(seed=2, train=TINY_TRAIN)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert differences(cfg.to_dict(), RunConfig(seed=3, train=TINY_TRAIN.replace(width=8)).to_dict()) == \
        ["seed: 2 -> 3", "train.width: 4 -> 8"]


@pytest.mark.parametrize("query", ["sr", "mcdropout", "coreset", "random"])
def test_label_isolation(digits, query):
    """Permuting the labels of unlabelled pool points changes nothing a round does."""
    cfg = RunConfig(query=query, strategy="inas", initial_size=40, query_sizes=(20,), budget=60, train=TINY_TRAIN,
                    inas_epochs=1, mc_passes=8)
    state = active.initial_state(cfg, len(digits.x_train))
    unlabelled = np.setdiff1d(np.arange(len(digits.y_train)), state.labelled)
    y = digits.y_train.copy()
    y[unlabelled] = np.random.default_rng(0).permutation(y[unlabelled])
    y[unlabelled[:50]] = (y[unlabelled[:50]] + 1) % 10
    shuffled = Dataset(digits.name, digits.x_train, y, digits.x_test, digits.y_test, 10)
    a = active.run_round(state, digits, cfg)
    b = active.run_round(state, shuffled, cfg)
    np.testing.assert_array_equal(a.labelled, b.labelled)
    assert a.history[0]["test_accuracy"] == b.history[0]["test_accuracy"]
    assert len(a.labelled) == 60 and len(set(a.labelled.tolist())) == 60
