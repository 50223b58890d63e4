"""python -m inas_jax.main: an active-learning run (active-iNAS by default), resumable from its workdir.

  python -m inas_jax.main                                   # iNAS + softmax response on digits, CPU preset
  python -m inas_jax.main --dataset=svhn --query=mcdropout --preset=paper --workdir=runs/svhn_mc
  python -m inas_jax.main --strategy=fixed --arch=2,4 --query=coreset --dataset=npz:../shared/data/cifar10.npz

Rerunning the same command resumes from the last committed round (and mid-training checkpoint).
"""
from __future__ import annotations

if __name__ == "__main__":  # first: glibc reads its tunables only at process start (inas_jax.allocator)
    from inas_jax.allocator import reexec_with_huge_pages
    reexec_with_huge_pages()

import logging
import os
import pathlib
import re
import shutil
import sys
import time

from absl import app, flags

from inas_jax.config import DATASET_AUGMENT, PRESETS, ConfigError, RunConfig, run_name, validate
from inas_jax.train import TrainConfig

_DATASET = flags.DEFINE_string("dataset", "digits", "digits | cifar10 | cifar100 | svhn | npz:PATH")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (prepared with array_record).")
_QUERY = flags.DEFINE_string("query", "sr", "Query function: sr | mcdropout | coreset | random")
_STRATEGY = flags.DEFINE_string("strategy", "inas", "inas (grow from --arch) | fixed (train --arch always)")
_ARCH = flags.DEFINE_string("arch", None, "BLOCKS,STACKS: iNAS start (default 1,1) or the fixed "
                            "architecture (required with --strategy=fixed; the paper's are 1,2 and 2,4).")
_PRESET = flags.DEFINE_string("preset", "cpu", f"Protocol preset: {' | '.join(PRESETS)}; flags below override it.")
_INITIAL = flags.DEFINE_integer("initial_size", None, "Initial random labelled set size k.")
_QUERY_SIZES = flags.DEFINE_list("query_sizes", None, "Query batch sizes in order; the last repeats "
                                 "(paper: 2000,2000,2000,2000,5000). One number = every query that size.")
_BUDGET = flags.DEFINE_integer("budget", None, "Total labels at the last round.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Training epochs per round (paper 200).")
_EPOCH_SIZE = flags.DEFINE_integer("epoch_size", None, "Samples per epoch, drawn from the labelled set (paper 50000).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Batch size (paper 128).")
_INAS_EPOCHS = flags.DEFINE_integer("inas_epochs", None, "Epochs per iNAS candidate (paper 50).")
_T_INAS = flags.DEFINE_integer("t_inas", None, "iNAS steps per round (paper 1).")
_WIDTH = flags.DEFINE_integer("width", None, "Base width (paper 64).")
_LR = flags.DEFINE_float("lr", None, "Initial learning rate (0.1).")
_FLIP = flags.DEFINE_boolean("flip", None, "Random horizontal flips.")
_SHIFT = flags.DEFINE_integer("max_shift", None, "Random shifts up to this many pixels.")
_ROTATION = flags.DEFINE_float("max_rotation", None, "Random rotations up to this many degrees.")
_DTYPE = flags.DEFINE_string("compute_dtype", "float32", "float32 | bfloat16 (accelerators).")
_MC_PASSES = flags.DEFINE_integer("mc_passes", 100, "MC-dropout stochastic passes.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the initial set, weights, batches and queries.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/DATASET_STRATEGY_QUERY_seedN).")
_MULTIHOST = flags.DEFINE_boolean("multihost", False, "Call jax.distributed.initialize() first (multi-host "
                                  "TPU/GPU pods; every host runs the same command).")
_CKPT_SECONDS = flags.DEFINE_float("checkpoint_seconds", 60.0, "Minimum seconds between mid-training checkpoints.")

log = logging.getLogger("inas_jax")


def _int_list(values: list[str], name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ConfigError(f"--{name}={','.join(values)} must be a comma-separated list of integers") from None


def config_from_flags() -> RunConfig:
    """Preset values, then the dataset's augmentation defaults, then every flag given explicitly."""
    if _PRESET.value not in PRESETS:
        raise ConfigError(f"--preset={_PRESET.value!r} is unknown: choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[_PRESET.value])
    values.update(DATASET_AUGMENT.get(_DATASET.value, {}))
    explicit = {f.name: f.value for f in (_INITIAL, _BUDGET, _EPOCHS, _EPOCH_SIZE, _BATCH, _INAS_EPOCHS, _T_INAS,
                                          _WIDTH, _LR, _FLIP, _SHIFT, _ROTATION) if f.present}
    if _QUERY_SIZES.present:
        explicit["query_sizes"] = _int_list(_QUERY_SIZES.value, "query_sizes")
    values.update(explicit)
    if _STRATEGY.value == "fixed" and _ARCH.value is None:
        raise ConfigError("--strategy=fixed needs --arch=BLOCKS,STACKS (the paper's baselines: 1,2 and 2,4)")
    arch = (1, 1)
    if _ARCH.value is not None:
        match = re.fullmatch(r"\s*A?\(?\s*(-?\d+)\s*[,x]\s*(-?\d+)\s*\)?\s*", _ARCH.value)
        if not match:
            raise ConfigError(f"--arch={_ARCH.value!r} is not BLOCKS,STACKS such as 2,4")
        arch = (int(match.group(1)), int(match.group(2)))
    train_fields = {k: values[k] for k in ("epochs", "epoch_size", "batch_size", "width", "flip", "max_shift",
                                          "max_rotation", "patch_max_size", "winograd", "eval_batch_size")
                    if k in values}
    if "lr" in values:
        train_fields["lr"] = values["lr"]
    train = TrainConfig(compute_dtype=_DTYPE.value, **train_fields)
    return RunConfig(dataset=_DATASET.value, query=_QUERY.value, strategy=_STRATEGY.value, arch=arch,
                     initial_size=values["initial_size"], query_sizes=tuple(values["query_sizes"]),
                     budget=values["budget"], train=train, inas_epochs=values["inas_epochs"],
                     t_inas=values["t_inas"], seed=_SEED.value, mc_passes=_MC_PASSES.value)


def default_workdir(cfg: RunConfig) -> str:
    return os.path.join("runs", run_name(cfg.dataset, cfg.strategy, cfg.arch, cfg.query, cfg.seed))


def prepare_workdir(path: str) -> None:
    """Creates the workdir (the last check, after every other setting is valid) and proves it writable."""
    p = pathlib.Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--workdir={path!r} exists and is not a directory")
    created = not p.exists()
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        if created:
            shutil.rmtree(p, ignore_errors=True)
        raise ConfigError(f"--workdir={path!r} is not writable: {err.strerror or err}") from None


def format_table(history) -> str:
    lines = [f"{'round':>5} {'labels':>7} {'arch':>7} {'params':>11} {'test acc':>9} "
             f"{'search s':>9} {'train s':>8} {'query s':>8}"]
    for r in history:
        s = r["seconds"]
        lines.append(f"{r['round']:5d} {r['num_labelled']:7d} {'A(%d,%d)' % tuple(r['arch']):>7} "
                     f"{r['num_params']:11,d} {r['test_accuracy']:9.4f} {s['search']:9.1f} {s['train']:8.1f} "
                     f"{s['query']:8.1f}")
    return "\n".join(lines)


def _setup_logging() -> None:
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv) -> int:
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
        return 2
    _setup_logging()
    from inas_jax import active
    from inas_jax.checkpoint import ConfigMismatch, RunStore
    from inas_jax.data import DataError, load_dataset
    from inas_jax.train import TrainingDiverged, check_batch_divisible

    try:
        cfg = config_from_flags()
        validate(cfg)
        workdir = _WORKDIR.value or default_workdir(cfg)
        if _CKPT_SECONDS.value < 0:
            raise ConfigError(f"--checkpoint_seconds={_CKPT_SECONDS.value} must be >= 0")
        if _MULTIHOST.value:
            import jax
            jax.distributed.initialize()
        try:
            check_batch_divisible(cfg.train.batch_size)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        dataset = load_dataset(cfg.dataset, _DATA_DIR.value)
        validate(cfg, pool_size=len(dataset.x_train))
        prepare_workdir(workdir)
        store = RunStore(workdir, cfg, _CKPT_SECONDS.value)
        store.open()
    except (ConfigError, DataError, ConfigMismatch) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    state = store.load()
    if state is None:
        state = active.initial_state(cfg, len(dataset.x_train))
        log.info("new run in %s: %s %s on %s, %d rounds to %d labels", workdir, cfg.strategy, cfg.query,
                 dataset.name, len(cfg.schedule()), cfg.budget)
    else:
        log.info("resuming %s after round %d of %d", workdir, state.round, len(cfg.schedule()))
    try:
        while not active.is_finished(state, cfg):
            t = time.perf_counter()
            state = active.run_round(state, dataset, cfg, store)
            store.save_round(state, finished=active.is_finished(state, cfg))
            log.info("round %d committed (%.1fs)", state.round, time.perf_counter() - t)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(format_table(state.history))
    print(f"results: {os.path.join(workdir, 'results.json')}")
    return 0


def run() -> None:
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    run()
