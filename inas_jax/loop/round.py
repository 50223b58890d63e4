"""Active rounds: an immutable pool state, a round function state -> state, and the loop over rounds.

One round: iNAS (or the fixed architecture) -> train from scratch on all labelled points -> record
test accuracy -> query b unlabelled points -> reveal their labels. Labels are read in one place
only, `labels_of`, and only for labelled indices; the test set is only ever evaluated.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from typing import Any, Callable, Protocol

import flax.struct
import jax
import numpy as np

from inas_jax.queries import registry as queries
from inas_jax.runtime.compilation import CompileAhead
from inas_jax.config import RunConfig, differences
from inas_jax.data.dataset import Dataset
from inas_jax.runtime.environment import cpu_threads, environment
from inas_jax.loop.inas import search
from inas_jax.model.network import Model, build_model
from inas_jax.loop.permutations import permutation
from inas_jax.model.search_space import MAX_BLOCKS, MAX_STACKS, Arch, neighbours, num_params
from inas_jax.loop.train import TrainConfig, TrainingDiverged, TrainState, evaluate, init_state, predict, train, warm_up

log = logging.getLogger(__name__)

# fold_in(round key, stream): the round's independent random streams.
SEARCH, FINAL_TRAINING, QUERY = 0, 1, 2
# iNAS steps "until the current architecture wins": every step grows the total block count
# (blocks x stacks), so no search on the grid takes more steps than this.
UNTIL_CONVERGED = MAX_BLOCKS * MAX_STACKS


@flax.struct.dataclass
class PoolState:
    """What crosses rounds. labelled_idx: pool indices (n,) int32 in order of acquisition;
    round: rounds completed; arch: the current architecture; history: one record (dict) per
    completed round."""

    labelled_idx: np.ndarray
    round: int = flax.struct.field(pytree_node=False)
    arch: Arch = flax.struct.field(pytree_node=False)
    history: tuple = flax.struct.field(pytree_node=False, default=())


class Progress(Protocol):
    """Persistence of a run (see checkpoint.RunStore); NoProgress keeps nothing."""

    def load(self) -> PoolState | None: ...
    def save_round(self, state: PoolState, finished: bool) -> None: ...
    def write_results(self, state: PoolState, finished: bool) -> None: ...
    def known_scores(self, round_: int) -> dict[Arch, float]: ...
    def known_spent(self, round_: int) -> dict: ...
    def candidate_done(self, round_: int, arch: Arch, score: float, spent: dict) -> None: ...
    def training_hooks(self, round_: int, task: str, template: Callable[[], Any],
                       spent: Callable[[], dict]) -> dict: ...


class NoProgress:
    def load(self):
        return None

    def save_round(self, state, finished):
        pass

    def write_results(self, state, finished):
        pass

    def known_scores(self, round_):
        return {}

    def known_spent(self, round_):
        return {}

    def candidate_done(self, round_, arch, score, spent):
        pass

    def training_hooks(self, round_, task, template, spent):
        return {}


def initial_labelled(pool_size: int, k: int, seed: int) -> np.ndarray:
    """The random initial labelled set: depends only on the pool size, k and the seed, so every
    strategy and query function of a comparison starts from the same points."""
    perm = permutation(jax.random.fold_in(jax.random.key(seed), 0x1AB), pool_size)
    return np.asarray(perm[:k], np.int32)


def initial_state(cfg: RunConfig, pool_size: int) -> PoolState:
    return PoolState(labelled_idx=initial_labelled(pool_size, cfg.initial_size, cfg.seed), round=0, arch=cfg.arch)


def round_key(cfg: RunConfig, round_: int) -> jax.Array:
    """The key of round `round_` (0-based): fold_in(key(seed), round)."""
    return jax.random.fold_in(jax.random.key(cfg.seed), round_)


def labelled_fingerprint(labelled_idx: np.ndarray) -> str:
    """sha1 of the labelled indices in acquisition order (int32 little-endian): equal runs, equal strings."""
    return hashlib.sha1(np.asarray(labelled_idx, "<i4").tobytes()).hexdigest()


def labels_of(dataset: Dataset, labelled_idx: np.ndarray) -> np.ndarray:
    """The oracle: labels of labelled pool points. The only place pool labels are read."""
    return dataset.y_train[labelled_idx]


def select(cfg: RunConfig, model: Model, state: TrainState, pool: np.ndarray, labelled_idx: np.ndarray, b: int,
           key: jax.Array) -> np.ndarray:
    """The configured query over the pool's images (N, H, W, C) (never its labels): b new indices."""
    is_labelled = np.zeros(len(pool), bool)
    is_labelled[labelled_idx] = True
    query = queries.QUERIES[cfg.query]
    outputs = None
    if query.uses_model:
        logits, embeddings = predict(model, state, pool, cfg.train.eval_batch_size)
        outputs = queries.PoolOutputs(logits, embeddings, state.params["head"])
    return query.fn(outputs, is_labelled, b, key, queries.QueryOptions(cfg.mc_passes, cfg.mc_rate))


PHASES = ("search", "train", "query")


class _PhaseClock:
    """Wall and process-CPU seconds (all threads) of a round's PHASES, in order: lap() ends the current
    one. `spent` ({'seconds', 'cpu_seconds'} by phase) is what an interrupted process recorded for the
    same round, so a resumed round counts the work it kept once, the work redone after the last
    checkpoint again, and the time of the dead process after that checkpoint not at all."""

    def __init__(self, spent: dict | None = None):
        spent = spent or {}
        self.seconds = dict(spent.get("seconds", {}))
        self.cpu_seconds = dict(spent.get("cpu_seconds", {}))
        self._phase = 0
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def _add_elapsed(self) -> None:
        wall, cpu, name = time.perf_counter(), time.process_time(), PHASES[self._phase]
        self.seconds[name] = self.seconds.get(name, 0.0) + wall - self._wall
        self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + cpu - self._cpu
        self._wall, self._cpu = wall, cpu

    def lap(self) -> None:
        self._add_elapsed()
        self._phase += 1

    def spent(self) -> dict:
        """{'seconds', 'cpu_seconds'} so far, the current phase's included: what a checkpoint keeps."""
        self._add_elapsed()
        return {"seconds": dict(self.seconds), "cpu_seconds": dict(self.cpu_seconds)}


def search_steps(cfg: RunConfig, round_: int) -> int:
    """iNAS steps in round `round_` (0-based): t_inas every round for inas; for longtail (Geifman &
    El-Yaniv's long-tail setting) steps until the current architecture wins in the first round, on
    the large passive initial set, then none (the architecture stays); none for fixed."""
    if cfg.strategy == "inas":
        return cfg.t_inas
    return UNTIL_CONVERGED if cfg.strategy == "longtail" and round_ == 0 else 0


def run_round(state: PoolState, dataset: Dataset, cfg: RunConfig, progress: Progress = NoProgress(),
              ahead: CompileAhead | None = None) -> PoolState:
    """One active round; returns the next state (round + 1, grown labelled set, one more record).

    Keys: round_key then fold_in SEARCH, FINAL_TRAINING, QUERY; so a resumed run repeats exactly
    what the uninterrupted one does. `ahead`, if given, compiles the other candidates of a search
    step while its first trains, and the next round's candidates while the final network trains
    (the CPU time of that compilation then counts in this round's train phase).
    """
    ahead = ahead or CompileAhead(enabled=False)
    r = state.round
    key = round_key(cfg, r)
    labelled_idx = state.labelled_idx
    x_lab, y_lab = dataset.x_train[labelled_idx], labels_of(dataset, labelled_idx)
    clock = _PhaseClock(progress.known_spent(r))

    def build(arch: Arch) -> Model:
        return build_model(arch, dataset.num_classes, cfg.model, dataset.channel_stats)

    def compile_candidates(round_: int, cands: list[Arch], n_labelled: int) -> None:
        cand_cfg = cfg.round_candidate_train(n_labelled)
        for cand in cands:  # every training pads the labelled images to the budget's rows
            ahead.submit((round_, cand), functools.partial(
                warm_up, build(cand), cand_cfg, dataset.image_shape, cfg.budget, validate=True))

    candidates = []
    arch = state.arch
    steps = search_steps(cfg, r)
    if steps:
        cand_cfg = cfg.round_candidate_train(len(labelled_idx))

        def prepare(cands: list[Arch]) -> None:
            compile_candidates(r, cands[1:], len(labelled_idx))  # the first trains now

        def score(cand: Arch, train_idx, val_idx, cand_key) -> float:
            ahead.claim((r, cand))
            model = build(cand)
            result = train(model, x_lab[train_idx], y_lab[train_idx], cand_cfg, cand_key,
                           val=(x_lab[val_idx], y_lab[val_idx]), capacity=cfg.budget,
                           label=f"round {r + 1} candidate {cand}",
                           **progress.training_hooks(r, f"candidate {cand}", _template(model, cand_cfg, dataset),
                                                     clock.spent))
            progress.candidate_done(r, cand, result.best_val_accuracy, clock.spent())
            return result.best_val_accuracy

        found = search(arch, len(labelled_idx), score, jax.random.fold_in(key, SEARCH), steps,
                       known=progress.known_scores(r), prepare=prepare)
        arch = found.arch
        candidates = [{"arch": c.to_json(), "val_accuracy": s} for c, s in found.scores.items()]
    clock.lap()

    sizes = cfg.schedule()
    if r + 1 < len(sizes) and search_steps(cfg, r + 1):
        compile_candidates(r + 1, neighbours(arch)[1:], sizes[r + 1])
    model = build(arch)
    final_cfg = cfg.round_train(len(labelled_idx))
    result = train(model, x_lab, y_lab, final_cfg, jax.random.fold_in(key, FINAL_TRAINING), capacity=cfg.budget,
                   label=f"round {r + 1} {arch}",
                   **progress.training_hooks(r, "final", _template(model, final_cfg, dataset), clock.spent))
    test = evaluate(result.model, result.state, dataset.x_test, dataset.y_test, final_cfg.eval_batch_size)
    if not math.isfinite(test["loss"]):
        raise TrainingDiverged(f"round {r + 1} {arch}: the test loss is {test['loss']}; lower the learning rate "
                               "or check the data")
    clock.lap()

    new = np.zeros((0,), np.int32)
    if r + 1 < len(sizes):
        b = sizes[r + 1] - len(labelled_idx)
        new = select(cfg, result.model, result.state, dataset.x_train, labelled_idx, b,
                     jax.random.fold_in(key, QUERY))
    clock.lap()

    record = {"round": r + 1, "num_labelled": int(len(labelled_idx)), "arch": arch.to_json(),
              "num_params": num_params(arch, dataset.num_classes, cfg.model.width, dataset.image_shape[-1]),
              "test_accuracy": test["accuracy"], "test_loss": test["loss"],
              "final_train_loss": result.history[-1]["loss"], "candidates": candidates,
              "num_queried": int(len(new)), "labelled_sha1": labelled_fingerprint(labelled_idx),
              "environment": environment(), "seconds": clock.seconds, "cpu_seconds": clock.cpu_seconds}
    log.info("round %d: %d labels, %s, test accuracy %.4f; queried %d (%s)", r + 1, len(labelled_idx), arch,
             test["accuracy"], len(new), ", ".join(f"{k} {v:.1f}s" for k, v in clock.seconds.items()))
    return state.replace(labelled_idx=np.concatenate([labelled_idx, new]).astype(np.int32), round=r + 1, arch=arch,
                         history=state.history + (record,))


def _template(model: Model, train_cfg: TrainConfig, dataset: Dataset) -> Callable[[], Any]:
    """A function giving the shapes of a fresh TrainState (no compute): the restore target for a
    mid-training checkpoint. Called only when there is one: tracing the model for it took ~10% of a
    fresh default run."""
    return lambda: jax.eval_shape(lambda: init_state(model, train_cfg, jax.random.key(0), dataset.image_shape))


def is_finished(state: PoolState, cfg: RunConfig) -> bool:
    return state.round >= len(cfg.schedule())


def run(cfg: RunConfig, dataset: Dataset, progress: Progress = NoProgress()) -> PoolState:
    """The whole run: resumes from `progress` (or starts from the initial set), runs the remaining
    rounds and commits each; returns the final state. cfg must be valid for the dataset."""
    state = progress.load()
    if state is None:
        state = initial_state(cfg, len(dataset.x_train))
        log.info("new run: %s %s on %s, %d rounds to %d labels", cfg.strategy, cfg.query, dataset.name,
                 len(cfg.schedule()), cfg.budget)
    else:
        log.info("resuming after round %d of %d", state.round, len(cfg.schedule()))
        recorded = state.history[-1].get("environment", {}) if state.history else {}
        now = environment()
        changed = differences(recorded, {k: now.get(k) for k in recorded})  # only the entries it recorded
        if changed:
            log.warning("resuming in another environment (%s): the rest of the run will not reproduce the "
                        "uninterrupted run bit for bit", "; ".join(changed))
    # On accelerators compiling is a sliver of a run, and a warm-up's step would share the device's memory.
    with CompileAhead(enabled=jax.default_backend() == "cpu" and cpu_threads() > 1) as ahead:
        while not is_finished(state, cfg):
            t = time.perf_counter()
            state = run_round(state, dataset, cfg, progress, ahead)
            progress.save_round(state, finished=is_finished(state, cfg))
            log.info("round %d committed (%.1fs)", state.round, time.perf_counter() - t)
    progress.write_results(state, finished=True)  # a finished run's results.json, even if it was lost
    return state
