"""Is the final training converged? Test accuracy of fixed architectures trained on random labels with
S, 2S (and 4S) training samples, on CIFAR-10.

  python experiments/convergence.py --preset=cifar_plateau --multipliers=1,2   # S per the preset's rule
  python experiments/convergence.py --samples=122880                           # one S for every label count
  python experiments/convergence.py --table                                     # print the table only

S is --samples, or with --preset the samples of that preset's final training at each labelled-set
size (RunConfig.round_train: epochs x epoch_size, its training settings). Each cell (architecture,
labelled-set size, samples) trains from scratch on the seed's random initial labelled set (the one
every run of the study starts from at that size) and is appended to --out as soon as it finishes,
and cells already measured (same settings) are reused. A cell in progress checkpoints its training
to --workdir at most every minute, so stopping and rerunning loses at most a minute of it. A
training is converged at S when doubling S changes test accuracy by less than one point.
"""
from __future__ import annotations

from inas_jax.runtime.allocator import reexec_if_main

reexec_if_main(__name__)  # first, before jax loads: glibc reads its tunables only at process start

import json
import pathlib
import shutil
import sys
import time

import jax
from absl import app, flags

from inas_jax.loop import round as active
from inas_jax.loop.state import initial_labelled
from inas_jax.store import RunStore
from inas_jax.runtime.compilation import enable_persistent_cache
from inas_jax.config import from_preset
from inas_jax.data import load_npz
from inas_jax.runtime.environment import environment
from inas_jax.model.network import build_model
from inas_jax.model.search_space import Arch
from inas_jax.loop.train import evaluate, init_state, train

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
CHECKPOINT_SECONDS = 60.0  # at most this long between a cell's training checkpoints


def define_flags() -> None:
    """The command's flags (defined only when run as a script, so that importing `cell` defines none)."""
    flags.DEFINE_string("npz", str(ROOT.parent / "shared" / "data" / "cifar10.npz"), "CIFAR-10 in the npz format.")
    flags.DEFINE_list("archs", ["1x2", "2x4"], "Architectures, BLOCKSxSTACKS.")
    flags.DEFINE_list("labels", None, "Labelled-set sizes (default: the preset's first and last, or 1000,4000).")
    flags.DEFINE_integer("samples", 204_800, "S: training samples of the base schedule (without --preset).")
    flags.DEFINE_string("preset", None, "Take S per labelled-set size and --settings from this preset.")
    flags.DEFINE_list("multipliers", ["1", "2", "4"], "Schedules of S times these.")
    flags.DEFINE_list("settings", ["width=16", "batch_size=128", "epoch_size=2048"],
                      "Settings of the trainings (name=value), on the cpu preset for cifar10 (without --preset).")
    flags.DEFINE_integer("seed", 0, "Seed of the labelled set, weights and batches.")
    flags.DEFINE_string("out", str(ROOT / "experiments" / "results" / "cifar_plateau" / "convergence.json"),
                        "Results file (JSON list of cells), read and extended.")
    flags.DEFINE_string("workdir", str(ROOT / "runs" / "convergence"),
                        "Checkpoints of the cells in progress (one directory each, removed when it finishes).")
    flags.DEFINE_boolean("table", False, "Print the table of --out and stop.")


def _settings() -> dict:
    out = {}
    for item in FLAGS.settings:
        name, value = item.split("=", 1)
        out[name] = int(value) if value.lstrip("-").isdigit() else value
    return out


def cell(dataset, arch: Arch, n: int, samples: int, settings: dict, seed: int, preset: str,
         workdir: pathlib.Path) -> dict:
    """Trains `arch` on the seed's n random labels for `samples` samples with the preset's training
    settings (and `settings`); its test accuracy and cost. Resumes from and checkpoints to
    workdir/<cell>, removed once the cell is measured; cpu_seconds counts this process only, and
    resumed_at_epoch says where it took over (0 for an uninterrupted cell)."""
    epoch_size = settings["epoch_size"]
    cfg = from_preset(preset, "cifar10", epochs=samples // epoch_size, seed=seed, **settings)
    idx = initial_labelled(len(dataset.x_train), n, seed)
    model = build_model(arch, dataset.num_classes, cfg.model, dataset.channel_stats)
    start = time.process_time()
    store = RunStore(workdir / f"{arch.blocks}x{arch.stacks}_{n}_{samples}_seed{seed}", cfg,
                     dataset.fingerprint, CHECKPOINT_SECONDS)
    store.open()
    try:
        checkpoint = store.training(0, "convergence", lambda: jax.eval_shape(
            lambda: init_state(model, cfg.train, jax.random.key(0), dataset.image_shape)))
        result = train(model, dataset.x_train[idx], dataset.y_train[idx], cfg.train,
                       jax.random.fold_in(jax.random.key(seed), active.FINAL_TRAINING),
                       label=f"{arch} {n} labels {samples}", checkpoint=checkpoint)
    finally:
        store.close()
    shutil.rmtree(store.dir)
    test = evaluate(result.model, result.state, dataset.x_test, dataset.y_test, cfg.train.eval_batch_size)
    return {"arch": arch.to_json(), "labels": n, "samples": samples, "settings": settings, "seed": seed,
            "test_accuracy": test["accuracy"], "test_loss": test["loss"],
            "final_train_loss": result.history[-1]["loss"], "cpu_seconds": time.process_time() - start,
            "resumed_at_epoch": checkpoint.resume[0] if checkpoint.resume else 0, "environment": environment()}


def table(cells: list[dict]) -> str:
    """Test accuracy per (arch, labels, seed) at each schedule, and the change from the previous one."""
    rows = ["| arch | labels | seed | test accuracy by training samples (change from the previous schedule, "
            "points) |", "|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((tuple(c["arch"]), c["labels"], c["seed"]), []).append(c)
    for (arch, n, seed), group in sorted(groups.items()):
        group.sort(key=lambda c: c["samples"])
        parts, prev = [], None
        for c in group:
            change = "" if prev is None else f" ({100 * (c['test_accuracy'] - prev):+.1f})"
            parts.append(f"{c['samples']:,}: {c['test_accuracy']:.4f}{change}")
            prev = c["test_accuracy"]
        rows.append(f"| {Arch(*arch)} | {n:,} | {seed} | " + "; ".join(parts) + " |")
    return "\n".join(rows)


def main(argv) -> int:
    out = pathlib.Path(FLAGS.out)
    cells = json.loads(out.read_text()) if out.exists() else []
    if FLAGS.table:
        print(table(cells))
        return 0
    enable_persistent_cache()
    settings = _settings()
    preset = FLAGS.preset and from_preset(FLAGS.preset, "cifar10")
    if preset:
        settings = {"width": preset.model.width, "batch_size": preset.train.batch_size,
                    "epoch_size": preset.train.epoch_size}
    labels = FLAGS.labels or ([preset.initial_size, preset.budget] if preset else [1000, 4000])
    dataset = load_npz(FLAGS.npz)
    for text in FLAGS.archs:
        arch = Arch.parse(text)
        for n in map(int, labels):
            base = preset.round_train(n).epochs * preset.train.epoch_size if preset else FLAGS.samples
            for m in map(int, FLAGS.multipliers):
                samples = m * base
                key = (arch.to_json(), n, samples, settings, FLAGS.seed)
                if any((c["arch"], c["labels"], c["samples"], c["settings"], c["seed"]) == key for c in cells):
                    continue
                cells.append(cell(dataset, arch, n, samples, settings, FLAGS.seed, FLAGS.preset or "cpu",
                                  pathlib.Path(FLAGS.workdir)))
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(cells, indent=1))
                print(table(cells), flush=True)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
