import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inas_jax import config, queries
from inas_jax.queries import coreset, uncertainty
from inas_jax.model.network import GridResNet, dropout, head_logits
from inas_jax.model.search_space import Arch

from conftest import init_variables, normal


def _mask(n, labelled):
    m = np.zeros(n, bool)
    m[list(labelled)] = True
    return m


def test_random_query_is_keyed_distinct_and_unlabelled():
    mask = _mask(50, range(0, 50, 2))
    a = queries.random_query(jax.random.key(0), mask, 10)
    assert len(set(a.tolist())) == 10 and not mask[a].any()
    np.testing.assert_array_equal(a, queries.random_query(jax.random.key(0), mask, 10))
    assert not np.array_equal(a, queries.random_query(jax.random.key(1), mask, 10))


def test_softmax_response_picks_least_confident_unlabelled():
    logits = np.array([[5, 0, 0], [0.1, 0, 0], [1, 1, 1], [3, 0, 0], [0.5, 0, 0], [9, 0, 0]], np.float32)
    # confidence order (lowest first): 2 (uniform), 1, 4, 3, 0, 5; point 2 is labelled
    np.testing.assert_array_equal(uncertainty.softmax_response(logits, _mask(6, [2]), 3), [1, 4, 3])


def test_uncertainty_query_size_is_checked():
    with pytest.raises(ValueError, match="has 1 unlabelled"):
        uncertainty.softmax_response(np.zeros((3, 2)), _mask(3, [0, 1]), 2)


def _tiny_model_and_embeddings(n=24):
    """(model, variables, images, deterministic logits, embeddings) of a tiny network (each pass jitted:
    one compilation instead of one per operation)."""
    model = GridResNet(Arch(1, 2), 5, width=4)
    x = normal((n, 8, 8, 1), seed=1)
    variables = init_variables(model, jax.random.key(0), x)
    logits, emb = jax.jit(model.apply)(variables, x)
    return model, variables, x, logits, np.asarray(emb)


@pytest.mark.parametrize("rate", [0.5, 0.3])
def test_mc_dropout_head_only_equals_full_stochastic_passes(rate):
    model, variables, x, det_logits, emb = _tiny_model_and_embeddings()
    key, passes = jax.random.key(9), 16
    scores = uncertainty.mc_scores(uncertainty.class_variance, variables["params"]["head"], emb, key, passes=passes,
                                   rate=rate)
    predicted = jnp.argmax(det_logits, -1)
    stochastic = jax.jit(lambda v, x, k: model.apply(v, x, dropout_key=k, dropout_rate=rate))
    probs = []
    for k in jax.random.split(jax.random.fold_in(key, 0), passes):  # chunk 0 of the pool
        logits, _ = stochastic(variables, x, k)
        probs.append(jnp.take_along_axis(jax.nn.softmax(logits, -1), predicted[:, None], 1)[:, 0])
    np.testing.assert_allclose(scores, np.var(np.stack(probs), 0), rtol=1e-4, atol=1e-7)
    assert scores.max() > 0


def _keep_mask_by_hand(key, rate, shape):
    """Independent Bernoulli(1 - rate) keeps (N, D), from the same random draws as the code: at rate 0.5
    bit j of random uint32 word w keeps unit 32 w + j (row-major); otherwise a uniform draw below 1 - rate."""
    if rate == 0.5:
        size = int(np.prod(shape))
        words = np.asarray(jax.random.bits(key, (-(-size // 32),), jnp.uint32)).astype(np.uint64)
        bits = (words[:, None] >> np.arange(32, dtype=np.uint64)) & 1
        return bits.reshape(-1)[:size].reshape(shape).astype(bool)
    return np.asarray(jax.random.uniform(key, shape, jnp.float32)) < np.float32(1.0 - rate)


def _mc_probs_by_hand(head, emb, key, passes, rate, chunk):
    """softmax (passes, N, C) of the head over inverted-dropout embeddings, in float64 numpy: chunk i of
    the pool takes its pass keys from split(fold_in(key, i), passes)."""
    kernel, bias = np.asarray(head["kernel"], np.float64), np.asarray(head["bias"], np.float64)
    out = []
    for i, start in enumerate(range(0, len(emb), chunk)):
        part = emb[start:start + chunk].astype(np.float64)
        probs = []
        for k in jax.random.split(jax.random.fold_in(key, i), passes):
            logits = np.where(_keep_mask_by_hand(k, rate, part.shape), part / (1.0 - rate), 0.0) @ kernel + bias
            e = np.exp(logits - logits.max(-1, keepdims=True))
            probs.append(e / e.sum(-1, keepdims=True))
        out.append(np.stack(probs))
    return np.concatenate(out, 1)


@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_mc_scores_equal_a_hand_written_dropout_over_more_than_one_chunk(rate):
    """mcdropout's and bald's scores equal the masked head computed by hand (keep each unit with
    probability 1 - rate, scale by 1 / (1 - rate)) over a pool of more than MC_CHUNK points, at the
    paper's rate (one random bit per unit) and another (a uniform draw per unit)."""
    rng = np.random.default_rng(3)
    n, d, c, passes = uncertainty.MC_CHUNK + 37, 6, 4, 3
    emb = rng.standard_normal((n, d)).astype(np.float32)
    head = {"kernel": jnp.asarray(rng.standard_normal((d, c)) * 2, jnp.float32), "bias": jnp.zeros(c)}
    key = jax.random.key(11)
    probs = _mc_probs_by_hand(head, emb, key, passes, rate, uncertainty.MC_CHUNK)
    # it keeps 1 - rate of the units (the shape of a chunk: its random draws are compiled already)
    assert abs(_keep_mask_by_hand(key, rate, (uncertainty.MC_CHUNK, d)).mean() - (1 - rate)) < 0.02
    predicted = np.argmax(emb @ np.asarray(head["kernel"]), -1)
    variance = probs[:, np.arange(n), predicted].var(0)
    np.testing.assert_allclose(uncertainty.mc_scores(uncertainty.class_variance, head, emb, key, passes=passes,
                                                     rate=rate), variance, rtol=1e-4, atol=1e-6)

    def h(p):
        return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), -1)
    np.testing.assert_allclose(uncertainty.mc_scores(uncertainty.mutual_information, head, emb, key, passes=passes,
                                                     rate=rate), h(probs.mean(0)) - h(probs).mean(0),
                               rtol=1e-4, atol=1e-5)
    picks = uncertainty.mc_dropout(head, emb, _mask(n, []), 5, key, passes=passes, rate=rate)
    assert set(picks.tolist()) == set(np.argsort(-variance, kind="stable")[:5].tolist())


def test_mc_dropout_prefers_uncertain_points():
    # units 0, 1 vote for class 0 and units 2, 3 for class 1
    head = {"kernel": jnp.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]], jnp.float32), "bias": jnp.zeros(3)}
    emb = np.zeros((6, 4), np.float32)
    emb[3] = [1.0, 0.0, 1.0, 0.0]   # one unit for each class: dropout flips the prediction
    emb[5] = [0.2, 0.2, 0.0, 0.0]   # weak but one-sided evidence: dropout barely moves p(class 0)
    scores = uncertainty.mc_scores(uncertainty.class_variance, head, emb, jax.random.key(0), passes=64)
    assert scores[3] > 5 * scores[5] > 0
    assert scores[[0, 1, 2, 4]].max() < 1e-10  # a zero embedding is unaffected by dropout
    assert uncertainty.mc_dropout(head, emb, _mask(6, []), 2, jax.random.key(0), passes=64).tolist() == [3, 5]
    assert uncertainty.mc_dropout(head, emb, _mask(6, [3]), 1, jax.random.key(0), passes=64).tolist() == [5]


def _brute_force_k_center(points, labelled_mask, b):
    d = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    centres = list(np.flatnonzero(labelled_mask))
    picks = []
    for _ in range(b):
        mind = d[:, centres].min(1) if centres else np.full(len(points), np.inf)
        mind[centres] = -1
        i = int(np.argmax(mind))
        picks.append(i)
        centres.append(i)
    return picks


@pytest.mark.parametrize("n_labelled", [0, 1, 7, 40])
def test_coreset_equals_brute_force(n_labelled):
    rng = np.random.default_rng(n_labelled)
    points = rng.standard_normal((120, 6)).astype(np.float32)
    mask = _mask(120, rng.choice(120, n_labelled, replace=False))
    picks = coreset.coreset(points, mask, 15, chunk=16)
    assert picks.tolist() == _brute_force_k_center(points.astype(np.float64), mask, 15)
    assert not mask[picks].any() and len(set(picks.tolist())) == 15


@pytest.mark.parametrize("lookahead", [1, 2, 16, 200])
def test_coreset_lookahead_passes_give_the_one_at_a_time_picks(lookahead):
    # Twins: every far point has a near-duplicate, so picking one makes its twin's candidate column
    # stale within the same pass; passes must end there and still give the brute-force picks.
    rng = np.random.default_rng(5)
    base = rng.standard_normal((60, 5)) * 10
    points = np.concatenate([base, base + 1e-2 * rng.standard_normal(base.shape)]).astype(np.float32)
    mask = _mask(120, [0, 60])
    picks = coreset.coreset(points, mask, 30, lookahead=lookahead)
    assert picks.tolist() == _brute_force_k_center(points.astype(np.float64), mask, 30)


def test_coreset_known_answer_on_a_line():
    points = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [5.0]], np.float32)
    # labelled {0}: farthest is 11 (index 4), then 5 (index 5), then 2 or 10 by distance 3 vs 1 -> index 2
    assert coreset.coreset(points, _mask(6, [0]), 3).tolist() == [4, 5, 2]


def test_coreset_all_duplicates_still_distinct():
    points = np.zeros((10, 3), np.float32)
    picks = coreset.coreset(points, _mask(10, [0, 1]), 5)
    assert len(set(picks.tolist())) == 5 and not {0, 1} & set(picks.tolist())


def test_entropy_and_margin_known_answers():
    logits = np.log(np.array([[0.98, 0.01, 0.01], [0.34, 0.33, 0.33], [0.5, 0.5, 0.0001], [0.6, 0.3, 0.1],
                              [0.9, 0.05, 0.05]], np.float32))
    # entropy: 1 (near uniform) > 3 > 2 > 4 > 0; margin (p1 - p2): 2 (0) < 1 (0.01) < 3 (0.3) < 4 < 0
    assert uncertainty.entropy(logits, _mask(5, []), 3).tolist() == [1, 3, 2]
    assert uncertainty.margin(logits, _mask(5, []), 3).tolist() == [2, 1, 3]
    assert uncertainty.margin(logits, _mask(5, [2]), 2).tolist() == [1, 3]


def _two_unit_head():
    # units 0, 1 vote for class 0 and units 2, 3 for class 1
    return {"kernel": jnp.array([[4, 0, 0], [4, 0, 0], [0, 4, 0], [0, 4, 0]], jnp.float32), "bias": jnp.zeros(3)}


def test_bald_scores_disagreement_not_uncertainty():
    emb = np.zeros((4, 5), np.float32)
    emb[1] = [1.0, 0.0, 1.0, 0.0, 0.0]   # dropout flips the prediction: the passes disagree -> high MI
    emb[2] = [0.0, 0.0, 0.0, 0.0, 1.0]   # a unit voting for classes 0 and 1 alike: uncertain in every pass
    emb[3] = [1.0, 1.0, 0.0, 0.0, 0.0]   # confidently class 0 in every pass
    head = {"kernel": jnp.concatenate([_two_unit_head()["kernel"], jnp.array([[4.0, 4.0, 0.0]])]),
            "bias": jnp.array([0.0, 0.0, -30.0])}  # class 2 never: every pass splits classes 0 and 1
    key = jax.random.key(0)
    scores = uncertainty.mc_scores(uncertainty.mutual_information, head, emb, key, passes=200)
    assert scores[1] > 0.2
    assert abs(scores[0]) < 1e-5 and abs(scores[2]) < 1e-5  # dropout cannot make these passes disagree
    logits = np.asarray(head_logits(head, emb))
    assert uncertainty.entropy(logits, _mask(4, [0]), 1).tolist() == [1]  # entropy ties points 1 and 2 ...
    assert uncertainty.entropy(logits, _mask(4, [0, 1]), 1).tolist() == [2]  # ... BALD tells them apart
    assert uncertainty.bald(head, emb, _mask(4, []), 1, key, passes=200).tolist() == [1]


def test_bald_uses_the_passes_and_keys_of_mcdropout():
    """The same key gives the same dropout masks: each pass's p(predicted class) equals mcdropout's."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((30, 4)).astype(np.float32)
    head, key, passes = _two_unit_head(), jax.random.key(5), 16
    probs = np.stack([np.asarray(jax.nn.softmax(head_logits(head, dropout(emb, k, 0.5)), -1))
                      for k in jax.random.split(jax.random.fold_in(key, 0), passes)])
    predicted = np.argmax(emb @ np.asarray(head["kernel"]), -1)
    np.testing.assert_allclose(uncertainty.mc_scores(uncertainty.class_variance, head, emb, key, passes=passes),
                               probs[:, np.arange(30), predicted].var(0), rtol=1e-4, atol=1e-7)
    def h(p):
        return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), -1)
    np.testing.assert_allclose(uncertainty.mc_scores(uncertainty.mutual_information, head, emb, key, passes=passes),
                               h(probs.mean(0)) - h(probs).mean(0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("statistic", [uncertainty.class_variance, uncertainty.mutual_information])
def test_mc_scores_chunk_i_uses_fold_in_key_i(statistic):
    """The pool is scored in chunks, chunk i with key fold_in(key, i): the chunking is part of the keys."""
    emb = np.random.default_rng(1).standard_normal((30, 4)).astype(np.float32)
    head, key = _two_unit_head(), jax.random.key(2)
    want = np.concatenate([np.asarray(statistic(head, emb[s:s + 8], jax.random.fold_in(key, i), passes=4, rate=0.5))
                           for i, s in enumerate(range(0, 30, 8))])
    np.testing.assert_array_equal(uncertainty.mc_scores(statistic, head, emb, key, passes=4, chunk=8), want)


def test_registry_is_what_validation_and_the_cli_offer():
    assert {"sr", "mcdropout", "coreset", "random", "entropy", "margin", "bald", "badge", "typiclust"} == \
        set(queries.QUERIES)
    assert all(name in config.RunConfig.__dataclass_fields__["query"].metadata["help"] for name in queries.QUERIES)


def test_registered_names_are_config_query_help_with_its_help():
    """config names the queries (validation loads no jax); one function is registered for each."""
    assert set(queries.QUERIES) == set(config.QUERY_HELP)
    assert all(q.help == config.QUERY_HELP[name] for name, q in queries.QUERIES.items())
    assert [name for name, q in queries.QUERIES.items() if not q.uses_model] == ["random"]
