"""What the paper's protocol costs on cloud accelerators, estimated from FLOPs (no accelerator needed).

  python experiments/cloud_cost.py                       # the table of the README's cloud-cost section
  python experiments/cloud_cost.py --utilisation=0.3 --out=/tmp/cost.md

For each strategy, the training images of one run of --preset=paper (every round's final training;
for iNAS also its candidates, each the current architecture's three grid neighbours trained for
inas_epochs of the round's schedule) times 3x the inference FLOPs per image as XLA counts them
(models.forward_flops, direct convolutions, width 64, 32x32x3), plus one inference pass over the
unlabelled pool per query. iNAS's path is data-dependent, so two bounds are given: it never grows
(stays at A(1,1)), or it grows every round through its costlier neighbour. Device hours = FLOPs /
(peak rate x utilisation); the peaks are the vendors' published dense bf16 rates and the prices
list prices, both assumptions a reader should replace with their own (flags).
"""
from __future__ import annotations

import pathlib

from absl import app, flags

from inas_jax.config import from_preset
from inas_jax.model.network import forward_flops
from inas_jax.model.search_space import Arch, neighbours

ROOT = pathlib.Path(__file__).resolve().parents[1]
UTILISATION = flags.DEFINE_float("utilisation", 0.05, "Fraction of the peak rate a training step reaches (small "
                                  "ResNets at batch 128 on 32x32 images use accelerators poorly; costs scale as "
                                  "1 / utilisation).")
SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per configuration of the grid.")
POOL = flags.DEFINE_integer("pool", 50_000, "Training-pool size (CIFAR 50,000; SVHN 73,257).")
OUT = flags.DEFINE_string("out", str(ROOT / "experiments" / "results" / "cloud_cost.md"), "Markdown table file.")

# name: (peak dense bf16 TFLOP/s of the device or slice, assumed on-demand $/hour of it)
ACCELERATORS = {
    "1x NVIDIA A100 (312 TFLOP/s, $3.67/h)": (312.0, 3.67),
    "1x NVIDIA H100 SXM (989 TFLOP/s, $11.06/h)": (989.0, 11.06),
    "TPU v5e-8 slice (8 x 197 TFLOP/s, 8 x $1.20/h)": (8 * 197.0, 8 * 1.20),
    "TPU v4-8 slice (4 x 275 TFLOP/s, 4 x $3.22/h)": (4 * 275.0, 4 * 3.22),
}
DATASETS, QUERIES = 3, 3  # the paper's grid: CIFAR-10, CIFAR-100, SVHN x softmax response, MC-dropout, coreset


class ForwardFlops(dict):
    """Arch -> forward FLOPs per image at width 64, computed on first use."""

    def __missing__(self, arch: Arch) -> float:
        self[arch] = forward_flops(arch, 10, 64)
        return self[arch]


def run_flops(strategy: str, fwd: dict[Arch, float]) -> float:
    """FLOPs of one --preset=paper run: 'A(b,s)' fixed, 'iNAS low' (stays at A(1,1)) or 'iNAS high'
    (grows every round through the costlier neighbour)."""
    cfg = from_preset("paper", "cifar10")
    sizes = cfg.schedule()
    arch = Arch.parse(strategy) if strategy.startswith("A(") else Arch(1, 1)
    total = 0.0
    for r, n in enumerate(sizes):
        final = cfg.round_train(n)
        if strategy.startswith("iNAS"):
            cand = cfg.round_candidate_train(n)
            cands = neighbours(arch)
            total += sum(3 * fwd[c] * cand.epochs * cand.epoch_size for c in cands)
            if strategy == "iNAS high":
                arch = max(cands, key=lambda c: fwd[c])
        total += 3 * fwd[arch] * final.epochs * final.epoch_size
        if r + 1 < len(sizes):
            total += fwd[arch] * (POOL.value - n)  # the query's inference pass over the unlabelled pool
    return total


def main(_):
    fwd = ForwardFlops()
    strategies = ["A(1,2)", "A(2,4)", "iNAS low", "iNAS high"]
    flops = {s: run_flops(s, fwd) for s in strategies}
    cfg = from_preset("paper", "cifar10")
    lines = [f"Assumptions: --preset=paper ({len(cfg.schedule())} rounds, {cfg.schedule()[0]:,} to {cfg.budget:,} labels, "
             f"{cfg.train.epochs} epochs of {cfg.train.epoch_size:,} images per final training, candidates "
             f"{cfg.inas_epochs} epochs), width 64, 32x32x3 images, {100 * UTILISATION.value:.0f}% of the "
             f"published dense bf16 peak, the on-demand prices named. Grid: {DATASETS} datasets x {QUERIES} "
             f"queries x {{A(1,2), A(2,4), iNAS}} x {SEEDS.value} seeds; iNAS at its high bound.", "",
             "| strategy | GFLOP/image (train) | PFLOP per run | " + " | ".join(ACCELERATORS) + " |",
             "|---|---|---|" + "---|" * len(ACCELERATORS)]
    for s in strategies:
        arch_note = "A(1,1)" if s == "iNAS low" else "from A(1,1), growing"
        per_image = 3 * fwd[Arch(1, 1) if s.startswith("iNAS") else Arch.parse(s)] / 1e9
        cells = []
        for peak, price in ACCELERATORS.values():
            hours = flops[s] / (peak * 1e12 * UTILISATION.value) / 3600
            cells.append(f"{hours:.2g} h, ${hours * price:,.2g}")
        lines.append(f"| {s} | {per_image:.3f}{'' if not s.startswith('iNAS') else ' (' + arch_note + ')'} | "
                     f"{flops[s] / 1e15:,.0f} | " + " | ".join(cells) + " |")
    grid = DATASETS * QUERIES * SEEDS.value * (flops["A(1,2)"] + flops["A(2,4)"] + flops["iNAS high"])
    cells = []
    for peak, price in ACCELERATORS.values():
        hours = grid / (peak * 1e12 * UTILISATION.value) / 3600
        cells.append(f"{hours:,.0f} h, ${hours * price:,.0f}")
    lines.append(f"| whole grid ({DATASETS * QUERIES * 3 * SEEDS.value} runs) | | {grid / 1e15:,.0f} | "
                 + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    pathlib.Path(OUT.value).write_text(text)
    print(text)


if __name__ == "__main__":
    app.run(main)
