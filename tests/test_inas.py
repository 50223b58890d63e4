import jax
import numpy as np

from inas_jax.loop.inas import search, split_train_val
from inas_jax.model.network import Arch


def _table_score(table, calls):
    def score(arch, train_idx, val_idx, key):
        calls.append(arch)
        assert len(set(train_idx) & set(val_idx)) == 0
        return table.get(arch, 0.0)
    return score


def test_moves_through_neighbours_and_stops_when_current_wins():
    # A toy landscape that peaks at A(2,2): (1,1) -> (1,2) -> (2,2) -> stays.
    table = {Arch(1, 1): 0.5, Arch(2, 1): 0.55, Arch(1, 2): 0.6, Arch(2, 2): 0.8, Arch(1, 3): 0.7,
             Arch(3, 2): 0.75, Arch(2, 3): 0.79}
    calls = []
    result = search(Arch(1, 1), 100, _table_score(table, calls), jax.random.key(0), t_inas=5)
    assert result.arch == Arch(2, 2)  # three steps: the calls below
    assert calls == [Arch(1, 1), Arch(2, 1), Arch(1, 2), Arch(2, 2), Arch(1, 3), Arch(3, 2), Arch(2, 3)]


def test_each_step_announces_its_candidates_to_train_before_scoring_them():
    """prepare (compiling ahead) hears each step's untrained candidates, in training order, first."""
    table = {Arch(1, 1): 0.5, Arch(2, 1): 0.55, Arch(1, 2): 0.6, Arch(2, 2): 0.8, Arch(1, 3): 0.7}
    events = []
    search(Arch(1, 1), 100, _table_score(table, events), jax.random.key(0), t_inas=2,
           prepare=lambda archs: events.append(("prepare", archs)))
    assert events == [("prepare", [Arch(1, 1), Arch(2, 1), Arch(1, 2)]), Arch(1, 1), Arch(2, 1), Arch(1, 2),
                      ("prepare", [Arch(2, 2), Arch(1, 3)]), Arch(2, 2), Arch(1, 3)]


def test_t_inas_limits_steps_and_ties_keep_current():
    calls = []
    table = {Arch(1, 1): 0.5, Arch(2, 1): 0.9, Arch(1, 2): 0.6}
    assert search(Arch(1, 1), 50, _table_score(table, calls), jax.random.key(0), t_inas=1).arch == Arch(2, 1)
    tie = {Arch(1, 1): 0.7, Arch(2, 1): 0.7, Arch(1, 2): 0.7}
    assert search(Arch(1, 1), 50, _table_score(tie, []), jax.random.key(0)).arch == Arch(1, 1)


def test_known_scores_are_not_retrained():
    calls = []
    table = {Arch(1, 1): 0.5, Arch(2, 1): 0.9, Arch(1, 2): 0.6}
    search(Arch(1, 1), 50, _table_score(table, calls), jax.random.key(0), known={Arch(1, 1): 0.5})
    assert calls == [Arch(2, 1), Arch(1, 2)]


def test_split_is_fixed_disjoint_and_80_20():
    train, val = split_train_val(101, jax.random.key(3))
    assert len(val) == 20 and len(train) == 81
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(101))
    np.testing.assert_array_equal(val, split_train_val(101, jax.random.key(3))[1])


