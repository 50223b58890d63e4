"""Active rounds: an immutable pool state and a round function state -> state.

One round (SPEC.md): iNAS (or the fixed architecture) -> train from scratch on all labelled points
-> record test accuracy -> query b unlabelled points -> reveal their labels. Labels are read in one
place only, `labels_of`, and only for labelled indices; the test set is only ever evaluated.
"""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Protocol

import flax.struct
import jax
import numpy as np

from inas_jax import queries
from inas_jax.config import RunConfig
from inas_jax.data import Dataset
from inas_jax.inas import search
from inas_jax.models import Arch, num_params
from inas_jax.train import TrainConfig, TrainState, evaluate, init_state, make_model, predict, train

log = logging.getLogger(__name__)


@flax.struct.dataclass
class PoolState:
    """What crosses rounds. labelled: pool indices (n,) int32 in order of acquisition;
    key: the run's base key data (uint32); round: rounds completed; arch: the current architecture;
    history: one record (dict) per completed round."""

    labelled: np.ndarray
    key: np.ndarray
    round: int = flax.struct.field(pytree_node=False)
    arch: Arch = flax.struct.field(pytree_node=False)
    history: tuple = flax.struct.field(pytree_node=False, default=())


class Progress(Protocol):
    """Mid-round persistence (see checkpoint.RunStore); NoProgress keeps nothing."""

    def known_scores(self, round_: int) -> dict[Arch, float]: ...
    def candidate_done(self, round_: int, arch: Arch, score: float) -> None: ...
    def training_hooks(self, round_: int, task: str, template: Any) -> dict: ...


class NoProgress:
    def known_scores(self, round_):
        return {}

    def candidate_done(self, round_, arch, score):
        pass

    def training_hooks(self, round_, task, template):
        return {}


def initial_labelled(pool_size: int, k: int, seed: int) -> np.ndarray:
    """The random initial labelled set: depends only on the pool size, k and the seed, so every
    strategy and query function of a comparison starts from the same points."""
    perm = jax.random.permutation(jax.random.fold_in(jax.random.key(seed), 0x1AB), pool_size)
    return np.asarray(perm[:k], np.int32)


def initial_state(cfg: RunConfig, pool_size: int) -> PoolState:
    return PoolState(labelled=initial_labelled(pool_size, cfg.initial_size, cfg.seed),
                     key=np.asarray(jax.random.key_data(jax.random.key(cfg.seed))),
                     round=0, arch=cfg.start_arch)


def labelled_fingerprint(labelled: np.ndarray) -> str:
    """sha1 of the labelled indices in acquisition order (int32 little-endian): equal runs, equal strings."""
    return hashlib.sha1(np.asarray(labelled, "<i4").tobytes()).hexdigest()


def labels_of(dataset: Dataset, labelled: np.ndarray) -> np.ndarray:
    """The oracle: labels of labelled pool points. The only place pool labels are read."""
    return dataset.y_train[labelled]


def select(cfg: RunConfig, dataset: Dataset, arch: Arch, train_cfg: TrainConfig, state: TrainState,
           labelled: np.ndarray, b: int, key: jax.Array) -> np.ndarray:
    """Runs the configured query function over the pool's images (never its labels)."""
    mask = np.zeros(len(dataset.x_train), bool)
    mask[labelled] = True
    if cfg.query == "random":
        return queries.random_query(key, mask, b)
    model = make_model(arch, dataset.num_classes, train_cfg)
    logits, embeddings = predict(model, state, dataset.x_train, *dataset.channel_stats, train_cfg.eval_batch_size)
    if cfg.query == "sr":
        return queries.softmax_response(logits, mask, b)
    if cfg.query == "mcdropout":
        return queries.mc_dropout(state.params, embeddings, mask, b, key, cfg.mc_passes, cfg.mc_rate)
    return queries.coreset(embeddings, mask, b)


def run_round(state: PoolState, dataset: Dataset, cfg: RunConfig, progress: Progress = NoProgress()) -> PoolState:
    """One active round; returns the next state (round + 1, grown labelled set, one more record).

    Keys: fold_in(base, round) then 0 = search, 1 = final training, 2 = query; so a resumed run
    repeats exactly what the uninterrupted one does.
    """
    r = state.round
    round_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), r)
    labelled = state.labelled
    x_lab, y_lab = dataset.x_train[labelled], labels_of(dataset, labelled)
    stats = dataset.channel_stats
    seconds = {}

    t = time.perf_counter()
    candidates = []
    arch = state.arch
    if cfg.strategy == "inas":
        cand_cfg = cfg.candidate_train

        def score(cand: Arch, train_idx, val_idx, key) -> float:
            template = _template(cand, dataset, cand_cfg)
            result = train(cand, dataset.num_classes, x_lab[train_idx], y_lab[train_idx], cand_cfg, key, stats,
                           val=(x_lab[val_idx], y_lab[val_idx]), capacity=cfg.budget,
                           label=f"round {r + 1} candidate {cand}",
                           **progress.training_hooks(r, f"candidate {cand}", template))
            progress.candidate_done(r, cand, result.best_val_accuracy)
            return result.best_val_accuracy

        found = search(arch, len(labelled), score, jax.random.fold_in(round_key, 0), cfg.t_inas,
                       known=progress.known_scores(r))
        arch = found.arch
        candidates = [{"arch": [c.blocks, c.stacks], "val_accuracy": s} for c, s in found.scores.items()]
    seconds["search"] = time.perf_counter() - t

    t = time.perf_counter()
    result = train(arch, dataset.num_classes, x_lab, y_lab, cfg.train, jax.random.fold_in(round_key, 1), stats,
                   capacity=cfg.budget, label=f"round {r + 1} {arch}", **progress.training_hooks(r, "final", _template(arch, dataset, cfg.train)))
    model = make_model(arch, dataset.num_classes, cfg.train)
    test = evaluate(model, result.state, dataset.x_test, dataset.y_test, *stats, cfg.train.eval_batch_size)
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    sizes = cfg.schedule()
    new = np.zeros((0,), np.int32)
    if r + 1 < len(sizes):
        b = sizes[r + 1] - len(labelled)
        new = select(cfg, dataset, arch, cfg.train, result.state, labelled, b, jax.random.fold_in(round_key, 2))
    seconds["query"] = time.perf_counter() - t

    record = {"round": r + 1, "num_labelled": int(len(labelled)), "arch": [arch.blocks, arch.stacks],
              "num_params": num_params(arch, dataset.num_classes, cfg.train.width, dataset.image_shape[-1]),
              "test_accuracy": test["accuracy"], "test_loss": test["loss"],
              "final_train_loss": result.history[-1]["loss"], "candidates": candidates,
              "num_queried": int(len(new)), "labelled_sha1": labelled_fingerprint(labelled), "seconds": seconds}
    log.info("round %d: %d labels, %s, test accuracy %.4f; queried %d (%s)", r + 1, len(labelled), arch,
             test["accuracy"], len(new), ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items()))
    return state.replace(labelled=np.concatenate([labelled, new]).astype(np.int32), round=r + 1, arch=arch,
                         history=state.history + (record,))


def _template(arch: Arch, dataset: Dataset, train_cfg: TrainConfig):
    """Shapes of a fresh TrainState (no compute): the restore target for mid-training checkpoints."""
    model = make_model(arch, dataset.num_classes, train_cfg)
    return jax.eval_shape(lambda: init_state(model, train_cfg, jax.random.key(0), dataset.image_shape))


def is_finished(state: PoolState, cfg: RunConfig) -> bool:
    return state.round >= len(cfg.schedule())
