import os
import threading

import numpy as np
import pytest

from inas_jax.loop import round as active
from inas_jax.loop import state as state_mod
from inas_jax.config import ConfigError, RunConfig, differences, from_preset, validate
from inas_jax.data import Dataset
from inas_jax.queries import QUERIES
from inas_jax.model.search_space import Arch

from conftest import tiny_config

# The tiny run's settings (conftest) in one epoch of 64 samples without augmentation.
FAST = dict(epochs=1, epoch_size=64, flip=False, max_shift=0, max_rotation=0.0)


def test_paper_schedule():
    cfg = RunConfig(initial_size=2000, query_sizes=(2000, 2000, 2000, 2000, 5000), budget=50_000)
    assert cfg.schedule() == [2000, 4000, 6000, 8000, 10000] + list(range(15000, 50001, 5000))


def test_schedule_single_size_and_truncation_at_budget():
    assert RunConfig(initial_size=100, query_sizes=(100,), budget=350).schedule() == [100, 200, 300, 350]
    assert RunConfig(initial_size=5000, query_sizes=(5000, 5000, 5000, 30000), budget=50000).schedule() == \
        [5000, 10000, 15000, 20000, 50000]


def test_initial_set_depends_only_on_pool_k_and_seed():
    a = state_mod.initial_state(RunConfig(strategy="inas", query="sr", seed=3, initial_size=20), 500)
    b = state_mod.initial_state(RunConfig(strategy="fixed", arch=Arch(2, 4), query="coreset", seed=3, initial_size=20), 500)
    np.testing.assert_array_equal(a.labelled_idx, b.labelled_idx)
    c = state_mod.initial_state(RunConfig(seed=4, initial_size=20), 500)
    assert not np.array_equal(a.labelled_idx, c.labelled_idx) and len(set(a.labelled_idx.tolist())) == 20


@pytest.mark.parametrize("changes,message", [
    (dict(query="uncertainty"), "--query='uncertainty' is unknown"),
    (dict(strategy="grow"), "--strategy='grow' is unknown"),
    (dict(initial_size=0), "--initial_size=0 must be positive"),
    (dict(query_sizes=(100, -5)), "--query_sizes=100,-5"),
    (dict(budget=50, initial_size=100), "--initial_size=100 exceeds --budget=50"),
    (dict(epochs=0), "--epochs=0 must be positive"),
    (dict(budget=5000), "--budget=5000 exceeds the pool"),
    (dict(lr=float("nan")), "--lr=nan must be a finite number"),
    (dict(max_rotation=float("inf")), "--max_rotation=inf must be a finite number"),
    (dict(mc_rate=float("nan")), "--mc_rate=nan must be a finite number"),
    (dict(seed=2 ** 32 + 3), "--seed=4294967299 must be in 0..2147483647"),
    (dict(seed=-1), "--seed=-1 must be in"),
    (dict(conv_impl="im2col"), "--conv_impl='im2col' is unknown"),
    (dict(dropout=1.0), "--dropout=1.0 must be in"),
])
def test_validation_names_the_bad_setting(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(RunConfig().replace(**changes), pool_size=1300)


def test_bare_config_is_the_cpu_preset_on_digits_and_presets_merge_in_order():
    assert RunConfig() == from_preset("cpu", "digits")
    cfg = from_preset("paper", "cifar10", epochs=3, arch="2,4", query_sizes=["5", "6"])
    assert (cfg.model.width, cfg.train.epochs, cfg.train.epoch_size, cfg.arch, cfg.query_sizes) == \
        (64, 3, 50_000, Arch(2, 4), (5, 6))
    assert (cfg.train.flip, cfg.train.max_shift) == (True, 4)  # natural images: the paper's augmentation
    assert from_preset("paper", "digits").train.flip is False  # the dataset's augmentation follows the preset
    with pytest.raises(ConfigError, match="needs --arch"):
        from_preset(strategy="fixed")
    with pytest.raises(ConfigError, match="outside the grid"):
        from_preset(arch="13,1")
    with pytest.raises(ConfigError, match="unknown setting 'widht'"):
        RunConfig().replace(widht=3)


def test_config_round_trip_and_differences():
    cfg = tiny_config(seed=2, **FAST)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert differences(cfg.to_dict(), cfg.replace(seed=3, width=8).to_dict()) == \
        ["model.width: 4 -> 8", "seed: 2 -> 3"]


def test_a_config_recorded_before_a_setting_existed_reads_with_the_value_that_reproduces_it():
    """A stored config without xla_max_channels (written before it existed, when no convolution was
    XLA's by that rule) reads as xla_max_channels=0; every other missing setting stays an error."""
    d = RunConfig().to_dict()
    del d["model"]["xla_max_channels"]
    assert RunConfig.from_dict(d) == RunConfig().replace(xla_max_channels=0)
    assert "xla_max_channels" not in d["model"]  # the caller's dict is left alone
    del d["model"]["winograd"]
    with pytest.raises(ConfigError, match="missing setting model.winograd"):
        RunConfig.from_dict(d)


def test_the_study_presets_keep_the_lowering_their_runs_were_made_with():
    assert from_preset("cifar_plateau").model.xla_max_channels == 0
    assert from_preset("cifar_cpu").model.xla_max_channels == 0
    assert RunConfig().model.xla_max_channels == 16
    with pytest.raises(ConfigError, match="xla_max_channels=-1 must be >= 0"):
        validate(RunConfig().replace(xla_max_channels=-1))


@pytest.mark.parametrize("damage,message", [
    (lambda d: d.pop("model"), "missing setting model"),
    (lambda d: d.update(extra=1), "unknown setting extra"),
    (lambda d: d["train"].update(epochs="3"), "train.epochs='3' is not of type int"),
    (lambda d: d["train"].update(flip=1), "train.flip=1 is not of type bool"),
    (lambda d: d.update(arch=[1, 99]), "outside the grid"),
    (lambda d: d.update(query_sizes=[1.5]), "query_sizes=\\[1.5\\]"),
    (lambda d: d.update(model=[]), "model is not an object"),
])
def test_config_from_a_damaged_dict_names_the_field(damage, message):
    d = RunConfig().to_dict()
    damage(d)
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(d)


def _without_timings(history) -> list[dict]:
    """Every round's record but its wall and CPU seconds."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")} for r in history]


LABEL_ISOLATION = [("inas", q) for q in QUERIES] + [("fixed", "sr"), ("longtail", "sr"), ("longtail", "random")]
_ON_DIGITS: dict = {}


def _run_on_digits(cfg, digits):
    """active.run(cfg, digits), made once per config in this module: a run is a function of its config
    and data (test_reliability.py::test_same_seed_same_run_and_other_seed_differs)."""
    if cfg not in _ON_DIGITS:
        _ON_DIGITS[cfg] = active.run(cfg, digits)
    return _ON_DIGITS[cfg]


@pytest.mark.parametrize("strategy,query", LABEL_ISOLATION, ids=[f"{s}-{q}" for s, q in LABEL_ISOLATION])
def test_label_isolation(digits, strategy, query):
    """Permuting and corrupting the labels of the pool points a run never labels changes nothing it
    does: every round's candidates and their validation scores, architecture, training loss, test
    accuracy and picks are the same."""
    cfg = tiny_config(query=query, strategy=strategy, **FAST)
    a = _run_on_digits(cfg, digits)
    assert len(a.labelled_idx) == 60 and len(set(a.labelled_idx.tolist())) == 60 and len(a.history) == 2
    never = np.setdiff1d(np.arange(len(digits.y_train)), a.labelled_idx)
    y = digits.y_train.copy()
    y[never] = np.random.default_rng(0).permutation(y[never])
    y[never[:50]] = (y[never[:50]] + 1) % 10
    assert (y[never] != digits.y_train[never]).sum() >= 50
    shuffled = Dataset(digits.name, digits.x_train, y, digits.x_test, digits.y_test, 10)
    b = active.run(cfg, shuffled)
    np.testing.assert_array_equal(a.labelled_idx, b.labelled_idx)
    assert _without_timings(a.history) == _without_timings(b.history)
    if strategy != "fixed":
        assert a.history[0]["candidates"]  # the search's scores were compared


@pytest.mark.parametrize("strategy", ["inas", "longtail"])
def test_the_test_set_chooses_nothing(digits, strategy):
    """Another test set (other images, other labels) changes only the test accuracies and losses: every
    round's candidates and their validation scores, architecture, training and picks are the same."""
    cfg = tiny_config(query="sr", strategy=strategy, **FAST)
    rng = np.random.default_rng(1)
    other = Dataset(digits.name, digits.x_train, digits.y_train,
                    rng.integers(0, 256, digits.x_test.shape).astype(np.uint8),
                    rng.permutation(digits.y_test), 10)
    a, b = _run_on_digits(cfg, digits), active.run(cfg, other)
    np.testing.assert_array_equal(a.labelled_idx, b.labelled_idx)
    tested = ("test_accuracy", "test_loss")
    assert [{k: v for k, v in r.items() if k not in tested} for r in _without_timings(a.history)] == \
        [{k: v for k, v in r.items() if k not in tested} for r in _without_timings(b.history)]
    assert [r["test_accuracy"] for r in a.history] != [r["test_accuracy"] for r in b.history]  # it was seen
    assert a.history[0]["candidates"]  # the search's scores were compared


def test_compiling_ahead_runs_in_the_background_and_changes_no_number(digits, monkeypatch):
    """With a CPU to spare, the later candidates of each round's search are warmed up on another
    thread (while the first trains, or during the previous round's final training); the results are
    those of a run without it."""
    cfg = tiny_config(strategy="inas", budget=80, **FAST)
    warmed, real_warm_up = [], active.warm_up

    def spy(model, train_cfg, image_shape, rows, **kwargs):
        warmed.append((train_cfg, model.arch, threading.current_thread() is threading.main_thread()))
        return real_warm_up(model, train_cfg, image_shape, rows, **kwargs)

    monkeypatch.setattr(active, "warm_up", spy)
    results = {}
    for threads in (1, 2):
        monkeypatch.setattr(active, "cpu_threads", lambda: threads)
        final = active.run(cfg, digits)
        results[threads] = [{k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")}
                            for r in final.history]
        assert threads == 2 or not warmed  # one CPU: no thread
    assert results[1] == results[2]
    later = {(cfg.round_candidate_train(r["num_labelled"]), Arch(*c["arch"]))
             for r in results[2] for c in r["candidates"][1:]}
    assert (cfg.round_candidate_train(40), Arch(2, 1)) in {(c, a) for c, a, _ in warmed}  # round 1's second
    assert all((c, a) in later and not on_main for c, a, on_main in warmed)


def test_training_grows_with_the_labelled_set_under_train_passes():
    """round_train: max(epochs, ceil(passes * labels / epoch_size)); candidates keep inas_epochs/epochs
    of that schedule; without train_passes every round trains `epochs` and candidates `inas_epochs`."""
    cfg = from_preset("cifar_plateau", "cifar10")
    assert cfg.schedule() == [1000, 2500, 4000]
    assert [cfg.round_train(n).epochs for n in cfg.schedule()] == [240, 600, 960]
    assert cfg.replace(train_passes=245.76).round_train(1000).epochs == 240  # the floor
    cand = cfg.round_candidate_train(4000)
    assert (cand.epochs, cand.schedule_epochs) == (240, 960)
    assert cfg.round_train(4000).step_config() == cand.step_config()  # the candidate shares the final step
    plain = from_preset("cifar_cpu", "cifar10")
    assert {plain.round_train(n).epochs for n in plain.schedule()} == {30}
    assert (plain.round_candidate_train(4000).epochs, plain.round_candidate_train(4000).schedule_epochs) == (8, 30)
    with pytest.raises(ConfigError, match="--train_passes=-1.0 must be >= 0"):
        validate(cfg.replace(train_passes=-1.0))
    with pytest.raises(ConfigError, match="--inas_epochs=300 exceeds --epochs=240"):
        validate(cfg.replace(inas_epochs=300))


def test_rounds_record_their_environment_and_a_resume_elsewhere_warns(monkeypatch, caplog):
    """Each record holds environment() (XLA:CPU's floats depend on its thread count); resuming a run
    whose last round recorded another environment logs a warning naming what changed."""
    from inas_jax.runtime import environment
    current = environment.environment()
    assert current["cpu_threads"] == len(os.sched_getaffinity(0)) and current["backend"] == "cpu"
    cfg = RunConfig(initial_size=40, query_sizes=(), budget=40)
    done = state_mod.PoolState(labelled_idx=np.arange(40, dtype=np.int32), round=1, arch=Arch(1, 1),
                            history=({"environment": dict(current, cpu_threads=current["cpu_threads"] + 1)},))

    class Finished(state_mod.NoProgress):
        def load(self):
            return done

    caplog.set_level("WARNING")
    active.run(cfg, None, Finished())
    assert f"cpu_threads: {current['cpu_threads'] + 1} -> {current['cpu_threads']}" in caplog.text
    caplog.clear()
    done = done.replace(history=({"environment": current},))
    active.run(cfg, None, Finished())
    assert "another environment" not in caplog.text
