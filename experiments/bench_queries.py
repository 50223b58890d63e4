"""Query-function speed: coreset vs the numpy peer, MC-dropout head-only vs full passes, pool inference.

  python experiments/bench_queries.py                     # the issue-4 sizes (a few minutes)
  python experiments/bench_queries.py --pool=5000 --full_passes=2

coreset: greedy k-center, N=--pool points of dimension --dim, --labelled labelled, --picks picks, timed
  against ../shared/tools/peer_kcenter_numpy.py's kcenter_greedy on the same arrays in this process;
  the sha1 of the picked indices of both is printed and, where the sequences part, how close the
  two choices were there (float32 ties split greedy paths).
mcdropout: --passes passes over --mc_pool 32x32x3 images with A(1,1) at --width: the head-only path
  (backbone once + vmapped head) vs full stochastic forward passes, of which --full_passes are timed
  and scaled to --passes. That both give the same scores for the same keys is pinned by
  tests/test_queries.py::test_mc_dropout_head_only_equals_full_stochastic_passes.
entropy, margin, bald: the scores over --pool embeddings of dimension --dim, C = 10 and 100 classes,
  against straightforward numpy (bald: --full_passes numpy passes timed and scaled to --passes).
  BADGE and TypiClust: experiments/bench_clustering.py.
inference: predict() images/s over the MC pool (TrainConfig.eval_batch_size per call) vs the training
  step's forward half (the train-mode forward at the training batch size) and the whole step.
"""
from __future__ import annotations

from inas_jax.runtime.allocator import reexec_if_main

reexec_if_main(__name__)  # first, before jax loads: glibc reads its tunables only at process start

import functools
import hashlib
import importlib.util
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from inas_jax.queries import coreset, uncertainty
from inas_jax.config import ModelConfig, TrainConfig
from inas_jax.model.network import build_model
from inas_jax.model.search_space import Arch
from inas_jax.loop.train import init_state, predict, train_epoch

PEER = pathlib.Path(__file__).resolve().parents[2] / "shared" / "tools" / "peer_kcenter_numpy.py"
POOL = flags.DEFINE_integer("pool", 50_000, "Coreset pool size N.")
DIM = flags.DEFINE_integer("dim", 512, "Embedding dimension D.")
LABELLED = flags.DEFINE_integer("labelled", 2000, "Labelled points.")
PICKS = flags.DEFINE_integer("picks", 2000, "Coreset picks.")
MC_POOL = flags.DEFINE_integer("mc_pool", 10_000, "MC-dropout pool size.")
PASSES = flags.DEFINE_integer("passes", 100, "MC-dropout passes.")
FULL_PASSES = flags.DEFINE_integer("full_passes", 3, "Full forward passes actually timed (scaled to --passes).")
WIDTH = flags.DEFINE_integer("width", 64, "Base width of the A(1,1) model for MC-dropout and inference.")


def sha1(idx) -> str:
    return hashlib.sha1(np.asarray(idx, np.int64).tobytes()).hexdigest()[:12]


def agreement(points, mask, ours, theirs) -> str:
    """Where two greedy pick sequences first part and, there, how close the two choices were.

    Up to the first difference both ran from the same centres, so their picks were the argmax of
    the same minimum distances; a float64 gap within float32 rounding means the paths split at a
    tie, not at an error.
    """
    differ = np.flatnonzero(ours != theirs)
    if not len(differ):
        return "same picks: all"
    k = int(differ[0])
    centres = np.concatenate([np.flatnonzero(mask), ours[:k]])
    c = points[centres].astype(np.float64)

    def min_dist(i):
        return float(((c - points[i].astype(np.float64)) ** 2).sum(1).min())

    a, b = min_dist(ours[k]), min_dist(theirs[k])
    return (f"same picks: first {k}, then a tie (float64 distances {a:.6f} vs {b:.6f}, "
            f"relative gap {abs(a - b) / max(a, b):.1e}; float32 rounding ~6e-8 per add)")


def bench_coreset():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((POOL.value, DIM.value), np.float32)
    mask = np.zeros(POOL.value, bool)
    mask[:LABELLED.value] = True
    coreset.coreset(points[:4096], mask[:4096], 8)  # compile the small shapes' siblings
    t = time.perf_counter()
    ours = coreset.coreset(points, mask, PICKS.value)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ours_again = coreset.coreset(points, mask, PICKS.value)
    t_ours_warm = time.perf_counter() - t
    assert np.array_equal(ours, ours_again)
    line = f"coreset N={POOL.value} D={DIM.value} L={LABELLED.value} picks={PICKS.value}: inas_jax {t_ours_warm:.2f}s " \
           f"(first call incl. compile {t_ours:.2f}s) sha1 {sha1(ours)}"
    if PEER.exists():
        spec = importlib.util.spec_from_file_location("peer", PEER)
        peer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(peer)
        t = time.perf_counter()
        theirs = peer.kcenter_greedy(points[LABELLED.value:], points[:LABELLED.value], PICKS.value) + LABELLED.value
        t_peer = time.perf_counter() - t
        line += f" | numpy peer {t_peer:.2f}s sha1 {sha1(theirs)} | speed-up {t_peer / t_ours_warm:.1f}x | " \
                + agreement(points, mask, ours, theirs)
    print(line, flush=True)


def _numpy_softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _numpy_entropy(p):
    return -np.sum(p * np.log(np.maximum(p, 1e-30)), -1)


def _best_of(fn, repeats=3):
    fn()  # compile / warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_scores():
    """entropy, margin and BALD over a pool of POOL embeddings (D=DIM), C = 10 and 100, vs numpy."""
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((POOL.value, DIM.value), np.float32)
    mask = np.zeros(POOL.value, bool)
    mask[:LABELLED.value] = True
    key = jax.random.key(4)
    for c in (10, 100):
        head = {"kernel": rng.standard_normal((DIM.value, c), np.float32) / np.sqrt(DIM.value),
                "bias": np.zeros(c, np.float32)}
        logits = emb @ head["kernel"]
        for name, ours, peer in (
                ("entropy", lambda: uncertainty.entropy(logits, mask, PICKS.value),
                 lambda: np.argsort(-np.where(mask, -np.inf, _numpy_entropy(_numpy_softmax(logits))),
                                    kind="stable")[:PICKS.value]),
                ("margin", lambda: uncertainty.margin(logits, mask, PICKS.value),
                 lambda: np.argsort(np.where(mask, np.inf, np.diff(np.sort(_numpy_softmax(logits), 1)[:, -2:], axis=1)[:, 0]),
                                    kind="stable")[:PICKS.value])):
            t_ours, a = _best_of(ours)
            t_peer, b = _best_of(peer)
            print(f"{name} N={POOL.value} C={c}: inas_jax {t_ours:.3f}s | numpy {t_peer:.3f}s | "
                  f"{t_peer / t_ours:.1f}x | picks in common {len(np.intersect1d(a, b))}/{PICKS.value} "
                  "(float32 vs float64 near-ties)", flush=True)

        def numpy_bald(passes):
            mean_p, mean_h = 0.0, 0.0
            for _ in range(passes):
                keep = rng.random(emb.shape) < 0.5
                p = _numpy_softmax(np.where(keep, emb / 0.5, 0.0) @ head["kernel"] + head["bias"])
                mean_p, mean_h = mean_p + p / passes, mean_h + _numpy_entropy(p) / passes
            return _numpy_entropy(mean_p) - mean_h

        t_ours, _ = _best_of(lambda: uncertainty.bald(head, emb, mask, PICKS.value, key, passes=PASSES.value), 2)
        t = time.perf_counter()
        numpy_bald(FULL_PASSES.value)
        t_peer = (time.perf_counter() - t) * PASSES.value / FULL_PASSES.value
        print(f"bald {PASSES.value} passes N={POOL.value} D={DIM.value} C={c}: inas_jax {t_ours:.2f}s | numpy "
              f"{t_peer:.1f}s (timed {FULL_PASSES.value} passes, scaled) | {t_peer / t_ours:.1f}x", flush=True)


def bench_mc_and_inference():
    cfg = TrainConfig(batch_size=128, epoch_size=128 * 3, flip=False, max_shift=0, max_rotation=0.0)
    stats = (np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32))
    model = build_model(Arch(1, 1), 10, ModelConfig(width=WIDTH.value), stats)
    state = init_state(model, cfg, jax.random.key(0), (32, 32, 3))
    rng = np.random.default_rng(1)
    pool = rng.integers(0, 256, (MC_POOL.value, 32, 32, 3), np.uint8)
    predict(model, state, pool[:1000], cfg.eval_batch_size)  # compile
    t = time.perf_counter()
    logits, emb = predict(model, state, pool, cfg.eval_batch_size)
    t_infer = time.perf_counter() - t
    key = jax.random.key(3)
    mc_dropout_scores = functools.partial(uncertainty.mc_scores, uncertainty.class_variance, state.params["head"])
    mc_dropout_scores(emb[:100], key, passes=PASSES.value)  # compile
    t = time.perf_counter()
    scores = mc_dropout_scores(emb, key, passes=PASSES.value)
    t_head = time.perf_counter() - t + t_infer  # the head-only path needs the one deterministic pass too

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    full = jax.jit(lambda xb, k: jax.nn.softmax(model.apply(variables, xb, dropout_key=k, dropout_rate=0.5)[0], -1))
    full(pool[:1000], key)
    t = time.perf_counter()
    for k in jax.random.split(key, FULL_PASSES.value):
        for s in range(0, len(pool), 1000):
            jax.block_until_ready(full(pool[s:s + 1000], k))
    t_full = (time.perf_counter() - t) * PASSES.value / FULL_PASSES.value
    print(f"mcdropout {PASSES.value} passes over {MC_POOL.value} images, A(1,1) width {WIDTH.value}: head-only "
          f"{t_head:.2f}s (incl. the deterministic pass {t_infer:.2f}s) | full passes {t_full:.1f}s "
          f"(timed {FULL_PASSES.value}, scaled) | speed-up {t_full / t_head:.0f}x", flush=True)

    # the training step's forward half: the train-mode forward (batch statistics) at the training batch size
    forward = jax.jit(lambda v, xb: model.apply(v, xb, train=True, mutable=["batch_stats"])[0][0])
    xb = jnp.asarray(pool[:cfg.batch_size])
    jax.block_until_ready(forward(variables, xb))
    t_forward = t_predict = float("inf")  # seconds per image, best of 3 (the machine is noisy)
    for _ in range(3):
        t = time.perf_counter()
        predict(model, state, pool, cfg.eval_batch_size)
        t_predict = min(t_predict, (time.perf_counter() - t) / len(pool))
        t = time.perf_counter()
        for _ in range(len(pool) // cfg.batch_size):
            jax.block_until_ready(forward(variables, xb))
        t_forward = min(t_forward, (time.perf_counter() - t) / (len(pool) // cfg.batch_size * cfg.batch_size))
    x = np.asarray(pool[:512])
    y = np.zeros(512, np.int32)
    batches = np.arange(384).reshape(3, 128) % 512
    s2, *_ = train_epoch(state, model, x, y, batches, key, cfg)  # compile and warm up
    jax.block_until_ready(s2)
    t = time.perf_counter()
    s2, losses, _ = train_epoch(s2, model, x, y, batches, key, cfg)
    jax.block_until_ready(losses)
    train_ips = 384 / (time.perf_counter() - t)
    print(f"inference (predict, batches of {cfg.eval_batch_size}) {1 / t_predict:.0f} images/s vs the training "
          f"step's forward half (train-mode forward, batch {cfg.batch_size}) {1 / t_forward:.0f} images/s -> "
          f"{t_forward / t_predict:.2f}x; whole training step {train_ips:.0f} images/s", flush=True)
    return scores


def main(_):
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}")
    bench_coreset()
    bench_scores()
    bench_mc_and_inference()


if __name__ == "__main__":
    app.run(main)
