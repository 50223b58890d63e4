"""python -m inas_jax.main (or `inas-jax`): an active-learning run (active-iNAS by default), resumable
from its workdir.

  python -m inas_jax.main                                   # iNAS + softmax response on digits, CPU preset
  python -m inas_jax.main --dataset=svhn --query=mcdropout --preset=paper --workdir=runs/svhn_mc
  python -m inas_jax.main --strategy=fixed --arch=2,4 --query=coreset --dataset=npz:../shared/data/cifar10.npz

Rerunning the same command resumes from the last committed round (and mid-training checkpoint).
Every flag but those below the loop is a setting of `config.RunConfig` (`config.SETTINGS`); a flag
given overrides the preset.

Exit status: 0 done; 1 the training diverged or the workdir could not be written (resumable);
2 bad input (flags, data, workdir, labels), nothing written; 3 waiting for labels from a person
(--oracle=person): fill the CSV the message names and run the same command again.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import pathlib
import shlex
import shutil
import sys
import tempfile

from absl import app, flags

from inas_jax import config
from inas_jax.config import ConfigError, RunConfig, from_preset, run_name, validate
from inas_jax.model.search_space import Arch

_DEFINE = {int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_boolean,
           str: flags.DEFINE_string, Arch: flags.DEFINE_string, tuple[int, ...]: flags.DEFINE_list}


def _shown(value) -> str:
    if isinstance(value, Arch):
        return f"{value.blocks},{value.stacks}"
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


for _setting in config.SETTINGS:
    _DEFINE[_setting.type](_setting.name, None, f"{_setting.help} [cpu preset: {_shown(_setting.default)}]")
_PRESET = flags.DEFINE_string("preset", "cpu", f"Protocol preset: {' | '.join(config.PRESETS)}; flags override it.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (prepared with array_record).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/DATASET_STRATEGY_QUERY_seedN).")
_MULTIHOST = flags.DEFINE_boolean("multihost", False, "One run over several processes, the cluster detected by "
                                  "jax.distributed.initialize() (Cloud TPU, Slurm, Open MPI); every process runs the "
                                  "same command.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "One run over several processes, without a detected "
                                   "cluster: HOST:PORT of process 0 (with --num_processes and --process_id).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --coordinator_address: how many processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --coordinator_address: this process's index, 0 "
                                   "(the one that writes the workdir) to --num_processes - 1.")
_FIRST_ROUND_FROM = flags.DEFINE_string(
    "first_round_from", None, "Workdir of a run with the same settings but for the query function's (--query, "
    "--mc_passes, --mc_rate): a new run starts from that run's first round (its search and final training, "
    "which come before any query) instead of recomputing it, with the same results.")
_ORACLE = flags.DEFINE_enum(
    "oracle", None, ["simulated", "person"], "Who labels the queried images: simulated (the labels the dataset "
    "holds) or person (files under WORKDIR/labels/ to fill; the run exits with status 3 until they are). Default: "
    "simulated where every label is known, person for an image folder's unlabelled/ pool.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Image folders: resize every image to this side (default: "
                                   "the images' common size; required when their sizes differ).")
_CKPT_SECONDS = flags.DEFINE_float("checkpoint_seconds", 60.0, "Minimum seconds between mid-training checkpoints.")
_CACHE = flags.DEFINE_string("compilation_cache", None, "Directory of the persistent XLA compilation cache shared "
                             "by runs, or 'off' (default: $INAS_JAX_COMPILATION_CACHE, else ~/.cache/inas_jax/xla).")

log = logging.getLogger("inas_jax")


def config_from_flags() -> RunConfig:
    """The preset, then the dataset's augmentation, then every setting flag given explicitly."""
    given = {s.name: flags.FLAGS[s.name].value for s in config.SETTINGS if flags.FLAGS[s.name].present}
    dataset = given.pop("dataset", RunConfig.dataset)
    return from_preset(_PRESET.value, dataset, **given)


def default_workdir(cfg: RunConfig) -> str:
    return os.path.join("runs", run_name(cfg))


def prepare_workdir(path: str) -> None:
    """Creates the workdir (the last check, after every other setting is valid) and proves it writable
    with a fresh file of its own (never a name that exists, such as a planted link)."""
    if not path:
        raise ConfigError("--workdir is empty: give a directory, or leave the flag out for the default")
    p = pathlib.Path(path)
    created = False
    try:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"--workdir={path!r} exists and is not a directory")
        created = not p.exists()
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write_probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        if created:
            shutil.rmtree(p, ignore_errors=True)
        raise ConfigError(f"--workdir={path[:80]!r}{'...' if len(path) > 80 else ''} is not writable: "
                          f"{err.strerror or err}") from None


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(history) -> str:
    lines = [f"{'round':>5} {'labels':>7} {'arch':>7} {'params':>11} {'test acc':>9} "
             f"{'search s':>9} {'train s':>8} {'query s':>8}"]
    for r in history:
        s = r["seconds"]
        lines.append(f"{r['round']:5d} {r['num_labelled']:7d} {str(Arch.from_json(r['arch'])):>7} "
                     f"{r['num_params']:11,d} {_accuracy(r['test_accuracy']):>9} {s['search']:9.1f} {s['train']:8.1f} "
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
    from inas_jax.data import DataError
    from inas_jax.oracle import LabelError
    from inas_jax.runtime import compilation
    from inas_jax.runtime.distributed import is_writer
    from inas_jax.store import WorkdirError

    store = None
    try:
        cfg, workdir, dataset = _checked_run()
        cache = _enable_cache(compilation)
        store = _open_store(cfg, workdir, dataset)
        oracle = _oracle(dataset, workdir)
    except (ConfigError, DataError, WorkdirError, LabelError) as err:
        if store is not None:
            store.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    compiled_before = compilation.snapshot()
    log.info("workdir %s", workdir)
    try:
        status, state = _run(cfg, dataset, store, oracle, workdir)
    finally:
        if store is not None:
            store.close()
    if status or not is_writer():
        return status
    log.info("%s; cache %s", compilation.snapshot().since(compiled_before).summary(), cache or "off")
    print(format_table(state.history))
    print(f"results: {os.path.join(workdir, 'results.json')}")
    return 0


def _open_store(cfg: RunConfig, workdir: str, dataset):
    """The run's RunStore, opened (created, locked, checked) by the writer process; None on the others,
    which receive the writer's refusal, if any, and raise it too."""
    from inas_jax.runtime.distributed import is_writer, share
    from inas_jax.store import RunStore, WorkdirError
    opened = []

    def open_on_writer() -> str | None:
        try:
            prepare_workdir(workdir)
            store = RunStore(workdir, cfg, dataset.fingerprint, _CKPT_SECONDS.value, _FIRST_ROUND_FROM.value,
                             dataset.classes)
            store.open()
        except (ConfigError, WorkdirError) as err:
            return str(err)
        opened.append(store)
        return None

    refused = share(open_on_writer)
    if refused is not None:
        raise ConfigError(refused) if is_writer() else ConfigError(f"the writer process refused the run: {refused}")
    return opened[0] if opened else None


def _run(cfg: RunConfig, dataset, store, oracle, workdir: str):
    """(exit status, final state) of the rounds: 0, or the status of what stopped them, said in one line."""
    from inas_jax.loop import round as active
    from inas_jax.loop.train import TrainingDiverged
    from inas_jax.oracle import LabelError, WaitingForLabels
    from inas_jax.runtime.distributed import several
    from inas_jax.store.shared import SharedProgress
    try:
        return 0, active.run(cfg, dataset, SharedProgress(store) if several() else store, oracle)
    except WaitingForLabels as err:
        print(f"waiting for labels: {err}; then run the same command again: {_this_command()}", file=sys.stderr)
        return 3, None
    except LabelError as err:
        print(f"error: {err}; fix the file and run the same command again", file=sys.stderr)
        return 2, None
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1, None
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130, None
    except OSError as err:  # a full disk, a quota, a file system gone read-only: the last commit stands
        print(f"error: cannot write {err.filename or workdir}: {err.strerror or err}; the workdir is resumable: fix "
              "the cause and rerun the same command", file=sys.stderr)
        return 1, None


def _this_command() -> str:
    """The command line that started this process, to be run again."""
    program = "inas-jax" if os.path.basename(sys.argv[0]) == "inas-jax" else "python -m inas_jax.main"
    return " ".join([program, *map(shlex.quote, sys.argv[1:])])


def _oracle_kind(dataset) -> str:
    """--oracle, checked against the dataset; by default simulated where every label is known."""
    kind = _ORACLE.value or ("simulated" if dataset.labels_known else "person")
    if kind == "simulated" and not dataset.labels_known:
        raise ConfigError(f"--oracle=simulated needs every label, but {dataset.name!r} has unlabelled images: use "
                          "--oracle=person (or leave the flag out)")
    if kind == "person" and (_MULTIHOST.value or _COORDINATOR.value):
        raise ConfigError("--oracle=person runs in one process: leave out --multihost and --coordinator_address")
    if kind == "person" and not dataset.train_files:
        raise ConfigError(f"--oracle=person asks about image files, but {dataset.name!r} has none: use an image "
                          "folder (--dataset=folder:DIR)")
    return kind


def _oracle(dataset, workdir: str):
    """The oracle of --oracle: the dataset's labels, or a person answering through WORKDIR/labels/."""
    from inas_jax.oracle import SimulatedOracle
    from inas_jax.oracle.person import PersonOracle
    if _oracle_kind(dataset) == "simulated":
        return SimulatedOracle(dataset.y_train)
    given = [] if dataset.initial_idx is None else dataset.initial_idx
    return PersonOracle(pathlib.Path(workdir) / "labels", dataset.classes, dataset.train_files, dataset.x_train,
                        {int(i): int(dataset.y_train[i]) for i in given})


def _with_given_labels(cfg: RunConfig, dataset) -> RunConfig:
    """A folder's labelled/ images are the initial set: --initial_size defaults to their count."""
    n = 0 if dataset.initial_idx is None else len(dataset.initial_idx)
    if not n or cfg.initial_size == n:
        return cfg
    if flags.FLAGS["initial_size"].present:
        raise ConfigError(f"--initial_size={cfg.initial_size}, but the folder gives {n} labelled images, the "
                          "initial set: leave the flag out, or move images in or out of labelled/")
    return dataclasses.replace(cfg, initial_size=n)


def _checked_run():
    """(config, workdir, dataset) of the command line, every flag checked (memory bounds included)
    before anything is written; raises ConfigError or DataError."""
    from inas_jax.data import load_dataset
    from inas_jax.loop.train import check_batch_divisible
    from inas_jax.runtime.resources import check_memory

    cfg = config_from_flags()
    validate(cfg)
    workdir = default_workdir(cfg) if _WORKDIR.value is None else _WORKDIR.value
    if not _CKPT_SECONDS.value >= 0 or not math.isfinite(_CKPT_SECONDS.value):
        raise ConfigError(f"--checkpoint_seconds={_CKPT_SECONDS.value} must be a finite number >= 0")
    _initialize_multihost()
    try:
        check_batch_divisible(cfg.train.batch_size)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    dataset = load_dataset(cfg.dataset, _DATA_DIR.value, _IMAGE_SIZE.value)
    cfg = _with_given_labels(cfg, dataset)
    validate(cfg, pool_size=len(dataset.x_train))
    _oracle_kind(dataset)
    check_memory(cfg, dataset.image_shape, dataset.num_classes, len(dataset.x_train))
    return cfg, workdir, dataset


def _enable_cache(compilation) -> str | None:
    """The persistent compilation cache of --compilation_cache, checked (compilation.check_cache_dir);
    raises ConfigError when it cannot be created or is not to be trusted. Off for a run over several CPU
    processes: on jax 0.12 an executable read from the cache never finishes its first collective
    across processes (gloo), so each process compiles its own."""
    import jax

    from inas_jax.runtime.distributed import several
    if several() and jax.default_backend() == "cpu":
        log.info("compilation cache off: a run over several CPU processes compiles its programs")
        return None
    try:
        return compilation.enable_persistent_cache(_CACHE.value)
    except OSError as err:
        raise ConfigError(f"--compilation_cache={_CACHE.value or compilation.default_cache_dir()!r} cannot be "
                          f"created: {err.strerror or err}; pass another directory or 'off'") from None


def _initialize_multihost() -> None:
    """jax.distributed.initialize for --multihost (detected) or --coordinator_address (given)."""
    given = [f for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID) if f.value is not None]
    if not _MULTIHOST.value and not given:
        return
    if given and len(given) != 3:
        raise ConfigError("--coordinator_address, --num_processes and --process_id go together: give all three")
    if given and not (_NUM_PROCESSES.value >= 1 and 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value):
        raise ConfigError(f"--process_id={_PROCESS_ID.value} must be in 0..--num_processes-1 "
                          f"(--num_processes={_NUM_PROCESSES.value})")
    from inas_jax.runtime.distributed import initialize
    try:
        initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except Exception as err:  # JAX raises several types when no cluster or coordinator is found
        flag = "--multihost: " if _MULTIHOST.value else ""
        raise ConfigError(f"{flag}jax.distributed.initialize() failed ({' '.join(str(err).split())[:200]}); run the "
                          "same command on every process, or give --coordinator_address, --num_processes and "
                          "--process_id") from None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with its errors (unknown flag, unparsable value) as one `error:` line, exit 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    """The console entry point: restarts once with huge pages for glibc, then runs.

    The restart (inas_jax.runtime.allocator) comes first, before jax or numpy is imported: this module
    imports only absl and the jax-free config at load.
    """
    from inas_jax.runtime.allocator import reexec_with_huge_pages
    reexec_with_huge_pages()
    for flag in flags.FLAGS.get_key_flags_for_module(__name__):  # --helpshort from the console script too
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)


if __name__ == "__main__":
    run()
