import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inas_jax.queries import badge, kmeans, typiclust


def _mask(n, labelled):
    m = np.zeros(n, bool)
    m[list(labelled)] = True
    return m


def _softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def _random_case(n=60, c=4, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return _softmax(rng.standard_normal((n, c)) * 2), rng.standard_normal((n, d)).astype(np.float32)


def _blobs(centres, sizes, scale, seed):
    rng = np.random.default_rng(seed)
    pts = [np.asarray(c) + scale * rng.standard_normal((m, len(c))) for c, m in zip(centres, sizes)]
    return np.concatenate(pts).astype(np.float32), np.repeat(np.arange(len(centres)), sizes)


def test_gradient_sq_dist_equals_the_explicit_gradient_embeddings():
    probs, h = _random_case()
    a = probs - np.eye(probs.shape[1])[probs.argmax(1)]
    g = (a[:, :, None] * h[:, None, :]).reshape(len(h), -1).astype(np.float64)  # (N, C*D)
    idx = np.array([0, 7, 7, 59])
    explicit = ((g[:, None, :] - g[idx][None, :, :]) ** 2).sum(-1)
    a_, norm = badge.gradient_factors(jnp.asarray(probs), jnp.asarray(h))
    np.testing.assert_allclose(badge.gradient_sq_dist(a_, jnp.asarray(h), norm, jnp.asarray(idx)), explicit, rtol=1e-4,
                               atol=1e-5)


def test_draw_frequencies_follow_the_weights():
    # two-level Gumbel-max over blocks of 4: P(i) ∝ d2_i among eligible points
    d2 = jnp.array([0, 1, 2, 3, 4, 0, 0, 0, 5, 5, 5, 5, 9, 0.5, 0.5, 1], jnp.float32)
    eligible = jnp.ones(16, bool).at[12].set(False)
    noise = jax.random.gumbel(jax.random.key(0), (40_000, 4 + 4))
    draws = jax.vmap(lambda z: kmeans._draw(d2, eligible, z, 4))(noise)
    freq = np.bincount(np.asarray(draws), minlength=16) / len(noise)
    p = np.where(eligible, d2, 0) / np.where(eligible, d2, 0).sum()
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / len(noise)) + 1e-12)
    # all weights 0: uniform among the eligible
    draws = jax.vmap(lambda z: kmeans._draw(jnp.zeros(16), eligible, z, 4))(noise)
    freq = np.bincount(np.asarray(draws), minlength=16) / len(noise)
    assert freq[12] == 0 and np.abs(freq[eligible] - 1 / 15).max() < 0.01


def _badge(probs, h, labelled, b, key, lookahead=32, n=64, c=4, d=8):
    """badge on the inputs padded to (n, c, d). Labelled filler rows and zero columns change no
    distance and are never picked, so the tests share one compilation."""
    m = len(h)
    p_pad, h_pad, l_pad = np.zeros((n, c), np.float32), np.zeros((n, d), np.float32), np.ones(n, bool)
    p_pad[:m, :probs.shape[1]], h_pad[:m, :h.shape[1]], l_pad[:m] = probs, h, labelled
    p_pad[m:, 0] = 1
    picks = badge.badge(p_pad, h_pad, l_pad, b, key, lookahead=lookahead)
    assert (picks < m).all()
    return picks


def test_badge_first_pick_is_the_largest_gradient_norm():
    probs = _softmax(np.array([[9, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0], [2, 0, 0]], np.float64))
    h = np.array([[1, 0], [1, 0], [0, 3], [0, 9], [2, 0]], np.float32)
    # |a|^2 |h|^2: point 3 (uniform probs, |h| = 9) is largest but labelled; next is point 2
    norms = np.sum((probs - np.eye(3)[probs.argmax(1)]) ** 2, 1) * np.sum(h * h, 1)
    assert norms.argmax() == 3 and np.argsort(-norms)[1] == 2
    for seed in range(3):
        assert _badge(probs, h, _mask(5, [3]), 2, jax.random.key(seed))[0] == 2


def test_badge_picks_cover_well_separated_groups():
    # four groups of gradient embeddings far apart (same probs, embeddings along different axes)
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(4), 15)
    h = (50 * np.eye(8)[groups] + rng.standard_normal((60, 8))).astype(np.float32)
    probs = _softmax(np.tile([[1.0, 0.0, 0.0]], (60, 1)) + 0.1 * rng.standard_normal((60, 3)))
    for seed in range(4):
        picks = _badge(probs, h, _mask(60, [0, 1]), 4, jax.random.key(seed))
        assert sorted(groups[picks].tolist()) == [0, 1, 2, 3]


def test_badge_is_distinct_unlabelled_int32_and_keyed():
    probs, h = _random_case()
    mask = _mask(60, range(0, 60, 3))
    picks = _badge(probs, h, mask, 20, jax.random.key(0))
    assert picks.dtype == np.int32 and len(set(picks.tolist())) == 20 and not mask[picks].any()
    np.testing.assert_array_equal(picks, _badge(probs, h, mask, 20, jax.random.key(0)))
    other = _badge(probs, h, mask, 20, jax.random.key(1))
    assert other[0] == picks[0] and not np.array_equal(other, picks)  # the first pick is not random
    # the public shapes, unpadded
    np.testing.assert_array_equal(badge.badge(probs, h, mask, 20, jax.random.key(0)), picks)


def test_badge_equals_one_at_a_time_d2_sampling_with_the_same_noise():
    probs, h = _random_case()
    mask = _mask(60, range(0, 60, 3))
    a = probs - np.eye(probs.shape[1])[probs.argmax(1)]
    g = (a[:, :, None] * h[:, None, :]).reshape(len(h), -1).astype(np.float64)
    key, block = jax.random.key(0), 8  # blocks of ~sqrt(60), rounded up to a power of two: 8 blocks of 8
    picks = [int(np.argmax(np.where(mask, -1, (g * g).sum(1))))]
    for t in range(1, 20):
        d2 = np.min(((g[:, None, :] - g[picks][None]) ** 2).sum(-1), 1)
        eligible = ~mask & ~np.isin(np.arange(60), picks)
        noise = jax.random.gumbel(jax.random.fold_in(key, t), (8 + block,))
        picks.append(int(kmeans._draw(jnp.pad(jnp.asarray(d2, jnp.float32), (0, 4)),
                                          jnp.pad(jnp.asarray(eligible), (0, 4)), noise, block)))
    assert badge.badge(probs, h, mask, 20, key).tolist() == picks


@pytest.mark.parametrize("lookahead", [1, 5])
def test_badge_lookahead_passes_give_the_one_at_a_time_picks(lookahead):
    probs, h = _random_case()
    mask = _mask(60, [5])
    np.testing.assert_array_equal(_badge(probs, h, mask, 30, jax.random.key(2), lookahead=lookahead),
                                  _badge(probs, h, mask, 30, jax.random.key(2)))


def test_badge_duplicates_fall_back_to_distinct_points():
    # three distinct points, each repeated: after three picks every remaining distance is 0
    h = np.repeat(np.array([[1, 0], [0, 2], [3, 3]], np.float32), 4, 0)
    probs = np.repeat(_softmax(np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.0]])), 4, 0)
    picks = _badge(probs, h, _mask(12, [0]), 11, jax.random.key(0))
    assert sorted(picks.tolist()) == list(range(1, 12))
    assert sorted((picks[:3] // 4).tolist()) == [0, 1, 2]  # the distinct points come first


@pytest.mark.parametrize("fn", ["badge", "typiclust"])
def test_query_size_is_checked(fn):
    probs, h = _random_case(n=5)
    query, args = (badge.badge, (probs, h)) if fn == "badge" else (typiclust.typiclust, (h,))
    with pytest.raises(ValueError, match="cannot query 3 points: the pool has 2 unlabelled"):
        query(*args, _mask(5, [0, 1, 2]), 3, jax.random.key(0))


# The k-means and TypiClust tests share N = 120 points of dimension 2 and k = 4: one compilation.

def test_kmeans_recovers_obvious_blobs_deterministically():
    x, blob = _blobs([(0, 0), (10, 0), (0, 10), (10, 10)], [30] * 4, 0.5, 0)
    for seed in range(3):
        centroids, assignment = kmeans.kmeans(x, 4, jax.random.key(seed), chunk=16)
        assert centroids.shape == (4, 2) and assignment.dtype == np.int32
        assert len(set(zip(blob.tolist(), assignment.tolist()))) == 4  # one cluster per blob
        for b in range(4):
            np.testing.assert_allclose(centroids[assignment[blob == b][0]], x[blob == b].mean(0), atol=1e-5)
    np.testing.assert_array_equal(assignment, kmeans.kmeans(x, 4, jax.random.key(2), chunk=16)[1])


def test_kmeans_converges_to_a_lloyd_fixed_point_in_chunks():
    x = np.random.default_rng(3).standard_normal((120, 2)).astype(np.float32)
    # chunks of 16 points: the last one (112..119) is shifted back to 104..119
    centroids, assignment = kmeans.kmeans(x, 4, jax.random.key(0), iters=100, tol=0.0, chunk=16)
    d = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(assignment, d.argmin(1))
    for j in range(4):
        np.testing.assert_allclose(centroids[j], x[assignment == j].mean(0), atol=1e-5)
    again = kmeans.kmeans(x, 4, jax.random.key(1), iters=100, tol=0.0, chunk=16)[1]
    assert not np.array_equal(again, assignment)


def test_kmeans_with_more_clusters_than_distinct_points():
    x = np.repeat(np.array([[0, 0], [1, 0], [0, 5]], np.float32), 40, 0)
    centroids, assignment = kmeans.kmeans(x, 4, jax.random.key(0), chunk=16)
    assert np.isfinite(centroids).all() and np.allclose(centroids[assignment], x, atol=1e-5)  # all on a centroid
    np.testing.assert_array_equal(assignment, kmeans.kmeans(x, 4, jax.random.key(0), chunk=16)[1])
    with pytest.raises(ValueError, match="cannot make 121 clusters of 120 points"):
        kmeans.kmeans(x, 121, jax.random.key(0))


def test_mean_knn_dist_equals_brute_force_in_blocks():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((90, 3)).astype(np.float32)
    assignment = np.concatenate([np.zeros(50), np.ones(6), [2], np.full(33, 3)]).astype(np.int32)
    assignment = assignment[rng.permutation(90)]
    got = typiclust._mean_knn_dist(jnp.asarray(x), jnp.asarray(assignment), k=4, knn=5, rows=8, cols=16)
    want = np.full(90, np.inf)
    for c in range(4):
        idx = np.flatnonzero(assignment == c)
        d = np.sqrt(((x[idx, None].astype(np.float64) - x[None, idx]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        if len(idx) > 1:
            want[idx] = np.sort(d, 1)[:, :min(5, len(idx) - 1)].mean(1)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def _reference_order(assignment, mean_dist, labelled, b, k, min_size):
    size = np.bincount(assignment, minlength=k)
    covered = np.bincount(assignment[labelled], minlength=k)
    picks = []
    for _ in range(b):
        free = [np.flatnonzero((assignment == c) & ~labelled & ~np.isin(np.arange(len(labelled)), picks))
                for c in range(k)]
        ok = [c for c in range(k) if len(free[c]) and size[c] >= min_size] or [c for c in range(k) if len(free[c])]
        c = min(ok, key=lambda c: (covered[c], -size[c], c))
        picks.append(free[c][np.lexsort((free[c], mean_dist[free[c]]))[0]])
        covered[c] += 1
    return picks


def test_typiclust_pick_order_equals_the_rule():
    rng = np.random.default_rng(5)
    assignment = rng.integers(0, 6, 40).astype(np.int32)
    assignment[assignment == 5] = 4  # cluster 5 empty
    mean_dist = rng.integers(0, 4, 40).astype(np.float32)  # many ties
    labelled = rng.random(40) < 0.3
    got = typiclust._pick_by_coverage(jnp.asarray(assignment), jnp.asarray(mean_dist), jnp.asarray(labelled),
                                      int((~labelled).sum()), cap=32, k=6, min_size=8)[:int((~labelled).sum())]
    assert got.tolist() == _reference_order(assignment, mean_dist, labelled, int((~labelled).sum()), 6, 8)


def _core_and_ring(centre, rng):
    """15 points within 0.2 of centre, 20 on a circle of radius 3 around it, an outlier at 8."""
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    return np.concatenate([centre + 0.1 * rng.standard_normal((15, 2)),
                           centre + 3 * np.stack([np.cos(angles), np.sin(angles)], 1),
                           [centre + 8]])


def test_typiclust_picks_the_dense_centre_of_each_blob():
    rng = np.random.default_rng(6)
    x = np.concatenate([_core_and_ring(np.array(c, np.float64), rng) for c in [(0, 0), (30, 0), (0, 30)]]
                       + [50 + rng.standard_normal((12, 2))]).astype(np.float32)
    labelled = _mask(120, [108])  # the fourth blob is covered: k = 1 + 3 clusters
    for seed in range(3):
        picks = typiclust.typiclust(x, labelled, 3, jax.random.key(seed))
        assert sorted((picks // 36).tolist()) == [0, 1, 2] and (picks % 36 < 15).all()  # cores, one a blob


def test_typiclust_skips_covered_and_small_clusters():
    x, blob = _blobs([(0, 0), (30, 0), (0, 30), (60, 60)], [45, 40, 30, 5], 1.0, 7)
    labelled = _mask(120, [0, 45])  # blobs 0 and 1 covered
    # k = 2 labelled + 2 picks = 4 clusters: the blobs. Blob 3 has no labelled point but is too small
    # (< 6 points); then blobs 0, 1, 2 have one labelled-or-picked point each: the largest, 0
    picks = typiclust.typiclust(x, labelled, 2, jax.random.key(0))
    assert blob[picks].tolist() == [2, 0]
    # the pool exhausted (4 clusters, as the reference's cap would keep): the tiny blob last
    everything = typiclust.typiclust(x, labelled, 118, jax.random.key(0), max_clusters=4)
    assert sorted(everything.tolist()) == sorted(set(range(120)) - {0, 45})
    assert blob[everything[-5:]].tolist() == [3] * 5


def test_typiclust_is_distinct_unlabelled_int32_and_keyed():
    x = np.random.default_rng(8).standard_normal((120, 2)).astype(np.float32)
    mask = _mask(120, [0, 1])
    picks = typiclust.typiclust(x, mask, 2, jax.random.key(0))
    assert picks.dtype == np.int32 and len(set(picks.tolist())) == 2 and not mask[picks].any()
    np.testing.assert_array_equal(picks, typiclust.typiclust(x, mask, 2, jax.random.key(0)))
    assert not np.array_equal(picks, typiclust.typiclust(x, mask, 2, jax.random.key(1)))
