"""inas-jax-predict: classify image files with a run's latest network, CSV on stdout.

  inas-jax-predict --workdir=runs/my_digits photos/ extra.png          # file,predicted,confidence
  inas-jax-predict --workdir=runs/my_digits --top_k=3 photos/          # predicted_1,confidence_1,...

Exit 0, or 2 with one line on stderr (no network in the workdir, a missing path, an unreadable image).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import sys


def header(top_k: int) -> list[str]:
    if top_k == 1:
        return ["file", "predicted", "confidence"]
    return ["file", *[f"{name}_{j}" for j in range(1, top_k + 1) for name in ("predicted", "confidence")]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inas-jax-predict", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="the run's workdir (its newest network is used)")
    parser.add_argument("--top_k", type=int, default=1, help="classes per image, most probable first")
    parser.add_argument("--batch_size", type=int, default=256, help="images per forward pass")
    parser.add_argument("paths", nargs="+", help="image files and directories (walked for images)")
    args = parser.parse_args(argv)
    from inas_jax.data import DataError
    from inas_jax.predict import load_network, predict_files
    from inas_jax.store import WorkdirError
    try:
        net = load_network(args.workdir)
        rows = predict_files(net, args.paths, args.top_k, args.batch_size)
        first = next(rows)  # a bad argument or an unreadable first image fails before anything is written
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header(args.top_k))
        for file, top in itertools.chain([first], rows):
            writer.writerow([file, *[v for name, p in top for v in (name, f"{p:.4f}")]])
    except (DataError, WorkdirError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
