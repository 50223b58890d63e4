"""The active round as a pipeline, and the loop over rounds.

One round, top to bottom: `search_architecture` (iNAS, or the fixed architecture) -> `train_final`
(from scratch on all labelled points) -> `evaluate_final` (test accuracy, recorded; it chooses
nothing) -> `query` (b unlabelled points) -> `ask` (the oracle learns what it will be asked) ->
`record` (the next PoolState). Each reads the round's `RoundContext` and returns what the next needs.
Labels come from the oracle (inas_jax.oracle) only, read once per round in `RoundContext.start` and
only for labelled indices; the test set is only ever evaluated.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from typing import Any, Callable

import jax
import numpy as np

from inas_jax import queries
from inas_jax.oracle import Oracle, SimulatedOracle
from inas_jax.config import PHASES, RunConfig, differences
from inas_jax.data import Dataset
from inas_jax.loop.inas import search
from inas_jax.loop.state import NoProgress, PoolState, Progress, initial_state, is_finished, labelled_fingerprint
from inas_jax.loop.train import (TrainConfig, TrainingDiverged, TrainResult, TrainState, evaluate, init_state,
                                 predict, train, warm_up)
from inas_jax.model.network import Model, build_model
from inas_jax.model.search_space import MAX_BLOCKS, MAX_STACKS, Arch, neighbours, num_params
from inas_jax.runtime.compilation import CompileAhead
from inas_jax.runtime.environment import cpu_threads, environment

log = logging.getLogger(__name__)

# fold_in(round key, stream): the round's independent random streams.
SEARCH, FINAL_TRAINING, QUERY = 0, 1, 2
# iNAS steps "until the current architecture wins": every step grows the total block count
# (blocks x stacks), so no search on the grid takes more steps than this.
UNTIL_CONVERGED = MAX_BLOCKS * MAX_STACKS


def round_key(cfg: RunConfig, round_: int) -> jax.Array:
    """The key of round `round_` (0-based): fold_in(key(seed), round)."""
    return jax.random.fold_in(jax.random.key(cfg.seed), round_)


class PhaseClock:
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


@dataclasses.dataclass(frozen=True)
class RoundContext:
    """What every step of round r reads: the settings, the data, the round's key and labelled set
    (x_lab (n, H, W, C) uint8, y_lab (n,) int32, read once from the oracle), where progress goes, the
    oracle, the background compiler and the phase clock."""

    cfg: RunConfig
    dataset: Dataset
    r: int
    key: jax.Array
    labelled_idx: np.ndarray
    x_lab: np.ndarray
    y_lab: np.ndarray
    progress: Progress
    oracle: Oracle
    ahead: CompileAhead
    clock: PhaseClock

    @classmethod
    def start(cls, state: PoolState, dataset: Dataset, cfg: RunConfig, progress: Progress, oracle: Oracle,
              ahead: CompileAhead) -> "RoundContext":
        """The round's context; the oracle's labels of the labelled set (it may raise WaitingForLabels)."""
        idx = state.labelled_idx
        y_lab = oracle.labels(state.round + 1, idx)
        return cls(cfg, dataset, state.round, round_key(cfg, state.round), idx, dataset.x_train[idx], y_lab,
                   progress, oracle, ahead, PhaseClock(progress.known_spent(state.round)))

    def build(self, arch: Arch) -> Model:
        return build_model(arch, self.dataset.num_classes, self.cfg.model, self.dataset.channel_stats)

    def template(self, model: Model, train_cfg: TrainConfig) -> Callable[[], Any]:
        """A function giving the shapes of a fresh TrainState (no compute): the restore target of a
        mid-training checkpoint, called only when there is one (tracing the model costs time)."""
        shape = self.dataset.image_shape
        return lambda: jax.eval_shape(lambda: init_state(model, train_cfg, jax.random.key(0), shape))


def search_steps(cfg: RunConfig, round_: int) -> int:
    """iNAS steps in round `round_` (0-based): t_inas every round for inas; for longtail (Geifman &
    El-Yaniv's long-tail setting) steps until the current architecture wins in the first round, on
    the large passive initial set, then none (the architecture stays); none for fixed."""
    if cfg.strategy == "inas":
        return cfg.t_inas
    return UNTIL_CONVERGED if cfg.strategy == "longtail" and round_ == 0 else 0


def compile_candidates(ctx: RoundContext, round_: int, cands: list[Arch], n_labelled: int) -> None:
    """Submits the trainings of `cands` (round `round_`, n_labelled labels) to the background compiler;
    every training pads the labelled images to the budget's rows, so one compilation serves all."""
    cand_cfg = ctx.cfg.round_candidate_train(n_labelled)
    for cand in cands:
        ctx.ahead.submit((round_, cand), functools.partial(
            warm_up, ctx.build(cand), cand_cfg, ctx.dataset.image_shape, ctx.cfg.budget, validate=True))


def score_candidate(ctx: RoundContext, cand: Arch, train_idx: np.ndarray, val_idx: np.ndarray,
                    cand_key: jax.Array) -> float:
    """iNAS's score of `cand`: its best validation accuracy trained on the labelled positions train_idx
    and scored on val_idx (never the test set); kept in the run's progress."""
    cand_cfg = ctx.cfg.round_candidate_train(len(ctx.labelled_idx))
    ctx.ahead.claim((ctx.r, cand))
    model = ctx.build(cand)
    result = train(model, ctx.x_lab[train_idx], ctx.y_lab[train_idx], cand_cfg, cand_key,
                   val=(ctx.x_lab[val_idx], ctx.y_lab[val_idx]), capacity=ctx.cfg.budget,
                   label=f"round {ctx.r + 1} candidate {cand}",
                   checkpoint=ctx.progress.training(ctx.r, f"candidate {cand}", ctx.template(model, cand_cfg),
                                                    ctx.clock))
    ctx.progress.candidate_done(ctx.r, cand, result.best_val_accuracy, ctx.clock.spent())
    return result.best_val_accuracy


def search_architecture(ctx: RoundContext, arch: Arch) -> tuple[Arch, list[dict]]:
    """The round's architecture and its candidates' records ({'arch', 'val_accuracy'}): iNAS steps from
    `arch` (search_steps of them; none keeps it)."""
    steps = search_steps(ctx.cfg, ctx.r)
    if not steps:
        return arch, []
    n = len(ctx.labelled_idx)
    found = search(arch, n, functools.partial(score_candidate, ctx), jax.random.fold_in(ctx.key, SEARCH), steps,
                   known=ctx.progress.known_scores(ctx.r),
                   prepare=lambda cands: compile_candidates(ctx, ctx.r, cands[1:], n))  # the first trains now
    return found.arch, [{"arch": c.to_json(), "val_accuracy": s} for c, s in found.scores.items()]


def train_final(ctx: RoundContext, arch: Arch) -> TrainResult:
    """`arch` trained from scratch on every labelled point, while the next round's candidates compile."""
    sizes = ctx.cfg.schedule()
    if ctx.r + 1 < len(sizes) and search_steps(ctx.cfg, ctx.r + 1):
        compile_candidates(ctx, ctx.r + 1, neighbours(arch)[1:], sizes[ctx.r + 1])
    model = ctx.build(arch)
    final_cfg = ctx.cfg.round_train(len(ctx.labelled_idx))
    return train(model, ctx.x_lab, ctx.y_lab, final_cfg, jax.random.fold_in(ctx.key, FINAL_TRAINING),
                 capacity=ctx.cfg.budget, label=f"round {ctx.r + 1} {arch}",
                 checkpoint=ctx.progress.training(ctx.r, "final", ctx.template(model, final_cfg), ctx.clock))


def evaluate_final(ctx: RoundContext, arch: Arch, result: TrainResult) -> dict:
    """{'accuracy', 'loss'} of the trained `arch` on the test set: recorded, never used to choose (both
    None without a test set)."""
    if not len(ctx.dataset.x_test):
        return {"accuracy": None, "loss": None}
    test = evaluate(result.model, result.state, ctx.dataset.x_test, ctx.dataset.y_test, ctx.cfg.train.eval_batch_size)
    if not math.isfinite(test["loss"]):
        raise TrainingDiverged(f"round {ctx.r + 1} {arch}: the test loss is {test['loss']}; lower the "
                               "learning rate or check the data")
    return test


def select(cfg: RunConfig, model: Model, state: TrainState, pool: np.ndarray, labelled_idx: np.ndarray, b: int,
           key: jax.Array) -> np.ndarray:
    """The configured query over the pool's images (N, H, W, C) (never its labels): b new indices."""
    is_labelled = np.zeros(len(pool), bool)
    is_labelled[labelled_idx] = True
    query_ = queries.QUERIES[cfg.query]
    outputs = None
    if query_.uses_model:
        logits, embeddings = predict(model, state, pool, cfg.train.eval_batch_size)
        outputs = queries.PoolOutputs(logits, embeddings, jax.device_get(state.params["head"]))
    return query_.fn(outputs, is_labelled, b, key, queries.QueryOptions(cfg.mc_passes, cfg.mc_rate))


def query(ctx: RoundContext, result: TrainResult) -> np.ndarray:
    """The pool indices (b,) int32 to label next with the trained network; none after the last round."""
    sizes = ctx.cfg.schedule()
    if ctx.r + 1 >= len(sizes):
        return np.zeros((0,), np.int32)
    b = sizes[ctx.r + 1] - len(ctx.labelled_idx)
    return select(ctx.cfg, result.model, result.state, ctx.dataset.x_train, ctx.labelled_idx, b,
                  jax.random.fold_in(ctx.key, QUERY))


def ask(ctx: RoundContext, result: TrainResult, new: np.ndarray) -> None:
    """Tells the oracle the points queried for the next round, with the trained network's class
    probabilities (b, K) when the oracle shows them to a person (a deterministic pass: it changes nothing)."""
    if not len(new):
        return
    probabilities = None
    if ctx.oracle.wants_guesses:
        logits, _ = predict(result.model, result.state, ctx.dataset.x_train[new], ctx.cfg.train.eval_batch_size)
        probabilities = queries.uncertainty.probabilities(logits)
    ctx.oracle.ask(ctx.r + 2, new, probabilities)


def record(state: PoolState, ctx: RoundContext, arch: Arch, candidates: list[dict], result: TrainResult,
           test: dict, new: np.ndarray) -> PoolState:
    """The next state: the round's record appended (results.json's per-round fields), `new` labelled."""
    data = ctx.dataset
    entry = {"round": ctx.r + 1, "num_labelled": int(len(ctx.labelled_idx)), "arch": arch.to_json(),
             "num_params": num_params(arch, data.num_classes, ctx.cfg.model.width, data.image_shape[-1]),
             "test_accuracy": test["accuracy"], "test_loss": test["loss"],
             "final_train_loss": result.history[-1]["loss"], "candidates": candidates,
             "num_queried": int(len(new)), "labelled_sha1": labelled_fingerprint(ctx.labelled_idx),
             "environment": environment(), "seconds": ctx.clock.seconds, "cpu_seconds": ctx.clock.cpu_seconds}
    accuracy = "no test set" if test["accuracy"] is None else f"test accuracy {test['accuracy']:.4f}"
    log.info("round %d: %d labels, %s, %s; queried %d (%s)", ctx.r + 1, len(ctx.labelled_idx), arch, accuracy,
             len(new), ", ".join(f"{k} {v:.1f}s" for k, v in ctx.clock.seconds.items()))
    return state.replace(labelled_idx=np.concatenate([ctx.labelled_idx, new]).astype(np.int32), round=ctx.r + 1,
                         arch=arch, history=state.history + (entry,))


def run_round(state: PoolState, dataset: Dataset, cfg: RunConfig, progress: Progress = NoProgress(),
              ahead: CompileAhead | None = None, oracle: Oracle | None = None) -> PoolState:
    """One active round; returns the next state (round + 1, grown labelled set, one more record).

    Keys: round_key then fold_in SEARCH, FINAL_TRAINING, QUERY; so a resumed run repeats exactly
    what the uninterrupted one does. `ahead`, if given, compiles the other candidates of a search
    step while its first trains, and the next round's candidates while the final network trains
    (the CPU time of that compilation then counts in this round's train phase).
    """
    ctx = RoundContext.start(state, dataset, cfg, progress, oracle or SimulatedOracle(dataset.y_train),
                             ahead or CompileAhead(enabled=False))
    arch, candidates = search_architecture(ctx, state.arch)
    ctx.clock.lap()
    result = train_final(ctx, arch)
    progress.save_network(ctx.r, arch, result)
    test = evaluate_final(ctx, arch, result)
    ctx.clock.lap()
    new = query(ctx, result)
    ask(ctx, result, new)
    ctx.clock.lap()
    return record(state, ctx, arch, candidates, result, test, new)


def warn_if_environment_changed(state: PoolState) -> None:
    """Logs a warning when a resumed run's last round recorded another environment (its floats will
    differ from the uninterrupted run's)."""
    recorded = state.history[-1].get("environment", {}) if state.history else {}
    now = environment()
    changed = differences(recorded, {k: now.get(k) for k in recorded})  # only the entries it recorded
    if changed:
        log.warning("resuming in another environment (%s): the rest of the run will not reproduce the "
                    "uninterrupted run bit for bit", "; ".join(changed))


def run(cfg: RunConfig, dataset: Dataset, progress: Progress = NoProgress(), oracle: Oracle | None = None) -> PoolState:
    """The whole run: resumes from `progress` (or starts from the initial set: the dataset's labelled
    images if it has any, else a random draw), runs the remaining rounds and commits each; returns the
    final state. cfg must be valid for the dataset. oracle: who labels (default: the dataset's labels)."""
    state = progress.load()
    if state is None:
        state = initial_state(cfg, len(dataset.x_train), dataset.initial_idx)
        log.info("new run: %s %s on %s, %d rounds to %d labels", cfg.strategy, cfg.query, dataset.name,
                 len(cfg.schedule()), cfg.budget)
    else:
        log.info("resuming after round %d of %d", state.round, len(cfg.schedule()))
        warn_if_environment_changed(state)
    # On accelerators compiling is a sliver of a run, and a warm-up's step would share the device's memory.
    # With several processes every computation is collective: none may run on a background thread.
    with CompileAhead(enabled=jax.default_backend() == "cpu" and cpu_threads() > 1 and jax.process_count() == 1) \
            as ahead:
        while not is_finished(state, cfg):
            t = time.perf_counter()
            state = run_round(state, dataset, cfg, progress, ahead, oracle)
            progress.save_round(state, finished=is_finished(state, cfg))
            log.info("round %d committed (%.1fs)", state.round, time.perf_counter() - t)
    progress.write_results(state, finished=True)  # a finished run's results.json, even if it was lost
    return state
