"""Training and evaluation as pure functions of explicit state and keys.

`train_step` is one SGD step (a jitted augmentation, then a jitted update with donated state);
`train_epoch` runs it over an epoch of index batches drawn (with oversampling) from the labelled set;
`train` loops epochs on the host so it can report progress, checkpoint, and stop on divergence;
`predict` runs the model over a pool in fixed-size batches.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from inas_jax.loop.augment import augment
from inas_jax.config import TrainConfig
from inas_jax.model.network import Model
from inas_jax.loop.permutations import permutations
from inas_jax.loop.state import TrainingCheckpoint

log = logging.getLogger(__name__)

# Images per jitted inference call. 128 keeps a call's activations near the CPU's caches: batches of
# 1000 ran 1.3-1.4x slower per image on the 2-core CPU (A(1,1) and A(2,4), width 64).
EVAL_BATCH_SIZE = 128
# Training dropout's key: fold_in(step key, DROPOUT_STREAM), apart from augmentation's.
DROPOUT_STREAM = 0xD0


class TrainingDiverged(RuntimeError):
    """The training loss, the test loss or a parameter became NaN or infinite."""


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training; a pytree, so it jits and checkpoints as is."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def data_parallel() -> tuple[NamedSharding, NamedSharding]:
    """(replicated, batch-sharded) shardings over a 1-D mesh of every device ("data" axis).

    Parameters, optimizer state and the labelled images are replicated; each step's batch of
    indices is split across devices, so under jit the gather, forward, BN statistics and gradient
    all-reduce run data-parallel with the same global-batch semantics as one device.
    """
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))


def place(tree: Any, sharding: NamedSharding) -> Any:
    """Host values (numpy arrays, or pytrees of them and of fully replicated arrays) on the devices of
    `sharding`. One process: jax.device_put. Several (jax.distributed): every process holds the same
    host values and hands each of its own devices its slice, making one global array.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(one, tree)


def to_host(array: jax.Array) -> np.ndarray:
    """A jax array as numpy on every process: gathered from the other processes when it is split
    across them (a batch-sharded output of several processes), else read directly."""
    if jax.process_count() > 1 and not array.is_fully_replicated and not array.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)


def check_batch_divisible(batch_size: int, what: str = "--batch_size") -> None:
    if batch_size % jax.device_count():
        raise ValueError(f"{what}={batch_size} is not divisible by the {jax.device_count()} devices: "
                         "the global batch is split evenly across them")


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """SGD with (Nesterov) momentum, step decay x0.1 at 50% and 75% of training, L2 on conv kernels."""
    total = (cfg.schedule_epochs or cfg.epochs) * cfg.steps_per_epoch
    schedule = optax.piecewise_constant_schedule(cfg.lr, {int(0.5 * total): 0.1, int(0.75 * total): 0.1})
    return optax.chain(
        optax.add_decayed_weights(2 * cfg.weight_decay, mask=_conv_kernel_mask),
        optax.sgd(schedule, momentum=cfg.momentum, nesterov=cfg.nesterov))


def _conv_kernel_mask(params):
    def is_conv_kernel(path, _):
        names = [getattr(p, "key", "") for p in path]
        return names[-1] == "kernel" and "conv" in names[-2]
    return jax.tree_util.tree_map_with_path(is_conv_kernel, params)


def init_state(model: Model, cfg: TrainConfig, key: jax.Array, image_shape) -> TrainState:
    """Fresh He-normal weights for `model` from `key`; image_shape is (H, W, C)."""
    variables = model.init(key, image_shape)
    params = variables["params"]
    return TrainState(step=np.zeros((), np.int32), params=params, batch_stats=variables["batch_stats"],
                      opt_state=initial_opt_state(make_optimizer(cfg), params))


def initial_opt_state(tx: optax.GradientTransformation, params) -> optax.OptState:
    """tx.init(params) built on the host. The optimizer's initial state is all zeros (the momentum
    trace, the schedule's step count), and building it with XLA compiled one tiny executable per
    parameter shape (15 per default run, each also a cache read on a warm start)."""
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), jax.eval_shape(tx.init, params))


def train_step(state: TrainState, model: Model, x: jax.Array, y: jax.Array, idx: jax.Array, key: jax.Array, *,
               cfg: TrainConfig):
    """One SGD step on the batch idx (B,) of indices into x (N, H, W, C) uint8, y (N,).

    Augmentation uses fold_in(key, state.step) (and training dropout, if the model has any, a key
    folded from that). Returns (state, loss, accuracy). A Python loop of jitted steps, not a
    lax.scan: XLA:CPU runs convolutions inside loop bodies ~20x slower. Augmentation is its own jitted
    call: inside the update XLA fuses the bilinear interpolation into each of the stem convolution's
    nine patch slices and computes it nine times (a 16% slower step for A(1,2) at width 16).
    """
    images = augmented_batch(state.step, x, idx, key, flip=cfg.flip, max_shift=cfg.max_shift,
                             max_rotation=cfg.max_rotation)
    return sgd_step(state, model, images, y, idx, key, cfg=cfg)


@functools.partial(jax.jit, static_argnames=("flip", "max_shift", "max_rotation"))
def augmented_batch(step: jax.Array, x: jax.Array, idx: jax.Array, key: jax.Array, *, flip: bool, max_shift: int,
                    max_rotation: float) -> jax.Array:
    """The augmented images (B, H, W, C) of step `step`'s batch idx (B,) of x (N, H, W, C)."""
    return augment(jax.random.fold_in(key, step), x, idx, flip=flip, max_shift=max_shift, max_rotation=max_rotation)


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("state",))
def sgd_step(state: TrainState, model: Model, images: jax.Array, y: jax.Array, idx: jax.Array, key: jax.Array, *,
             cfg: TrainConfig):
    """The SGD update of `train_step` on its augmented images (B, H, W, C) with labels y[idx]."""
    tx = make_optimizer(cfg)
    step_key = jax.random.fold_in(key, state.step)
    labels = y[idx]
    dropout = {}
    if model.dropout:
        dropout = dict(dropout_key=jax.random.fold_in(step_key, DROPOUT_STREAM), dropout_rate=model.dropout)

    def loss_fn(params):
        (logits, _), updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                           images, train=True, mutable=["batch_stats"], **dropout)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                           batch_stats=batch_stats, opt_state=opt_state)
    return new_state, loss, jnp.mean(jnp.argmax(logits, -1) == labels)


def train_epoch(state: TrainState, model: Model, x: jax.Array, y: jax.Array, batches: np.ndarray, key: jax.Array,
                cfg: TrainConfig):
    """One `train_step` per row of `batches` (S, B), each batch split across devices.

    Returns (state, losses (S,), accuracies (S,)).
    """
    _, sharded = data_parallel()
    losses, accs = [], []
    for idx in batches:
        state, loss, acc = _sharded_step(state, model, x, y, idx, key, cfg, sharded)
        losses.append(loss)
        accs.append(acc)
    return state, np.stack(jax.device_get(losses)), np.stack(jax.device_get(accs))  # host stacks compile nothing


def _sharded_step(state: TrainState, model: Model, x: jax.Array, y: jax.Array, idx: np.ndarray, key: jax.Array,
                  cfg: TrainConfig, sharded: NamedSharding):
    """`train_step` with cfg's step config on the batch idx (B,) put on the devices split by `sharded`:
    how `train_epoch` (and `warm_up`, to compile the same step) call it."""
    idx = place(np.asarray(idx, np.int32), sharded)
    return train_step(state, model, x, y, idx, key, cfg=cfg.step_config())


def epoch_batches(key: jax.Array, n: int, cfg: TrainConfig) -> np.ndarray:
    """Indices (steps_per_epoch, batch_size) into n labelled points for one epoch of cfg.epoch_size.

    Oversampling as in the paper: random permutations of 0..n-1 are concatenated until the epoch
    is full, so every labelled point is seen equally often (+-1) whatever n is.
    """
    needed = cfg.steps_per_epoch * cfg.batch_size
    perms = permutations(key, n, -(-needed // n))
    return perms.reshape(-1)[:needed].reshape(cfg.steps_per_epoch, cfg.batch_size)


@jax.jit
def _forward(model: Model, variables, images):
    return model.apply(variables, images, train=False)


def predict(model: Model, state: TrainState, x: np.ndarray,
            batch_size: int = EVAL_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic pass over x (N, H, W, C) uint8: (logits (N, C), embeddings (N, D)) as float32 numpy."""
    return predict_variables(model, {"params": state.params, "batch_stats": state.batch_stats}, x, batch_size)


def predict_variables(model: Model, variables: dict, x: np.ndarray,
                      batch_size: int = EVAL_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """`predict` with the network's variables {params, batch_stats}, e.g. a saved network's.

    Batches are padded to one fixed size (a multiple of the device count) so the forward pass
    compiles once per model, and are split across devices.
    """
    replicated, sharded = data_parallel()
    batch_size = -(-batch_size // jax.device_count()) * jax.device_count()
    model = place(model, replicated)
    variables = place(variables, replicated)
    logits, embeddings = [], []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        out_logits, out_emb = _forward(model, variables, place(chunk, sharded))
        logits.append(to_host(out_logits).astype(np.float32, copy=False)[:len(chunk) - pad])
        embeddings.append(to_host(out_emb).astype(np.float32, copy=False)[:len(chunk) - pad])
    return np.concatenate(logits), np.concatenate(embeddings)


def evaluate(model: Model, state: TrainState, x: np.ndarray, y: np.ndarray,
             batch_size: int = EVAL_BATCH_SIZE) -> dict:
    """{'accuracy', 'loss'} of the deterministic model on (x, y)."""
    logits, _ = predict(model, state, x, batch_size)
    log_probs = jax.nn.log_softmax(logits, -1)
    loss = float(-np.mean(np.take_along_axis(np.asarray(log_probs), y[:, None].astype(np.int64), 1)))
    return {"accuracy": float(np.mean(np.argmax(logits, -1) == y)), "loss": loss}


def _placed(model: Model, x: np.ndarray, y: np.ndarray, capacity: int | None) -> tuple[Model, jax.Array, jax.Array]:
    """`train`'s inputs on the devices, replicated: the model, and x (N, H, W, C), y (N,) int32 padded
    with zero rows to `capacity` rows (max(N, capacity) rows in all)."""
    replicated, _ = data_parallel()
    pad = max(0, (capacity or 0) - len(x))
    x_dev = place(np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x, replicated)
    y_dev = place(np.concatenate([y, np.zeros((pad,), y.dtype)]).astype(np.int32) if pad
                  else np.asarray(y, np.int32), replicated)
    return place(model, replicated), x_dev, y_dev


def warm_up(model: Model, cfg: TrainConfig, image_shape: tuple[int, ...], rows: int, validate: bool = False) -> None:
    """Compiles (or loads from the persistent cache) what `train(model, x, y, cfg, ..., capacity=...)`
    runs on images of image_shape (H, W, C) when it puts `rows` = max(len(x), capacity) of them on the
    devices: the initialisation, the SGD step and, with `validate`, the inference batch. It runs each
    once on zeros and discards the values, so the jitted functions' own caches hold the executables
    and the real training compiles nothing. Runs on a background thread (compilation.CompileAhead)
    while another network trains."""
    x = np.zeros((rows, *image_shape), np.uint8)
    model, x_dev, y_dev = _placed(model, x, np.zeros((rows,), np.int32), None)
    replicated, sharded = data_parallel()
    state = place(init_state(model, cfg, jax.random.key(0), image_shape), replicated)
    idx = np.zeros((cfg.batch_size,), np.int32)
    state, _, _ = _sharded_step(state, model, x_dev, y_dev, idx, jax.random.key(0), cfg, sharded)
    if validate:
        predict(model, state, x[:1], cfg.eval_batch_size)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the model trained, its final state, the best validation accuracy (if
    validating) and the per-epoch history."""

    model: Model
    state: TrainState
    best_val_accuracy: float | None
    history: list[dict]


def train(model: Model, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, key: jax.Array, *,
          val: tuple[np.ndarray, np.ndarray] | None = None,
          checkpoint: TrainingCheckpoint | None = None,
          capacity: int | None = None, label: str = "") -> TrainResult:
    """Trains `model` from scratch on (x (N,H,W,C) uint8, y (N,)) for cfg.epochs epochs.

    key fixes the initial weights (fold_in 0) and every epoch's sampling and augmentation
    (fold_in epoch+1), so a run resumed at epoch e from `resume=(e, state, history)` continues
    exactly as the uninterrupted run: `checkpoint.resume` is where it starts ((epochs done, state,
    history) or None), and `checkpoint.save(epochs_done, state, history)` is called after each epoch.
    With `val`, every epoch is scored on it and the best accuracy is returned (iNAS candidates). `capacity` pads x and y on the device to that many rows (never
    sampled), so trainings on growing labelled sets share one compiled step. Progress is logged
    for the last epoch and whenever 10 s passed since the last line. Raises TrainingDiverged on a
    non-finite loss or non-finite final parameters.
    """
    check_batch_divisible(cfg.batch_size)
    label = label or str(model.arch)
    model, x_dev, y_dev = _placed(model, x, y, capacity)
    resume = checkpoint.resume if checkpoint is not None else None
    if resume is None:
        start, state, history = 0, init_state(model, cfg, jax.random.fold_in(key, 0), x.shape[1:]), []
    else:
        start, state, history = resume[0], resume[1], list(resume[2])
    state = place(state, data_parallel()[0])
    last_log = time.perf_counter()
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        epoch_key = jax.random.fold_in(key, epoch + 1)
        batches = epoch_batches(jax.random.fold_in(epoch_key, 0), len(x), cfg)
        state, losses, accs = train_epoch(state, model, x_dev, y_dev, batches, jax.random.fold_in(epoch_key, 1), cfg)
        loss = float(jnp.mean(losses))
        if not np.isfinite(loss):
            raise TrainingDiverged(f"{label}: training loss is {loss} at epoch {epoch + 1}; "
                                   "lower the learning rate or check the data")
        record = {"epoch": epoch + 1, "loss": loss, "train_accuracy": float(jnp.mean(accs)),
                  "seconds": time.perf_counter() - t0}
        if val is not None:
            record["val_accuracy"] = evaluate(model, state, val[0], val[1], cfg.eval_batch_size)["accuracy"]
        history.append(record)
        if epoch + 1 == cfg.epochs or time.perf_counter() - last_log > 10.0:
            last_log = time.perf_counter()
            log.info("%s epoch %d/%d loss %.4f train_acc %.3f%s (%.1fs)", label, epoch + 1, cfg.epochs,
                     loss, record["train_accuracy"],
                     f" val_acc {record['val_accuracy']:.3f}" if val is not None else "", record["seconds"])
        if checkpoint is not None:
            checkpoint.save(epoch + 1, state, history)
    if not all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves((state.params, state.batch_stats))):
        raise TrainingDiverged(f"{label}: a parameter is not finite after training; lower the learning rate "
                               "or check the data")
    best = max((r["val_accuracy"] for r in history), default=None) if val is not None else None
    return TrainResult(model, state, best, history)
