"""The bundled digits written as an image folder, to try `--dataset=folder:DIR` on.

  python -m inas_jax.data.example_folder DIR                      # DIR/unlabelled/, DIR/test/<class>/, classes.txt
  python -m inas_jax.data.example_folder DIR --truth=truth.csv    # and every unlabelled image's true class
  python -m inas_jax.data.example_folder DIR --layout=train       # DIR/train/<class>/, DIR/test/<class>/

The images are scikit-learn's 8x8 digits (load_digits' train/test split) enlarged to 16x16 by repeating
each pixel, as grayscale PNGs. Pool file names (img_00017.png) do not reveal the class; the truth CSV has
the columns file (relative to DIR) and label (the class name).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

from inas_jax.data.digits import load_digits

SCALE = 2  # 8x8 digits -> 16x16 images


def write_example_folder(directory: str, layout: str = "pool", truth: str | None = None) -> list[str]:
    """Writes the digits as an image folder of `layout` ("pool" or "train") into the empty or new
    `directory`, and with `truth` the CSV of the unlabelled images' classes; returns what it wrote, a line
    each. Raises ValueError for a directory that is not empty or a layout it does not know."""
    if layout not in ("pool", "train"):
        raise ValueError(f"unknown layout {layout!r}: choose pool or train")
    if truth and layout != "pool":
        raise ValueError("--truth applies to the pool layout only: a train layout's folders are the truth")
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise ValueError(f"{directory!r} exists and is not an empty folder: choose a new one")
    digits = load_digits()
    names = [str(c) for c in range(digits.num_classes)]
    os.makedirs(directory, exist_ok=True)
    test = _write_images(directory, [f"test/{names[y]}/img_{i:05d}.png" for i, y in enumerate(digits.y_test)],
                         digits.x_test)
    if layout == "train":
        train = [f"train/{names[y]}/img_{i:05d}.png" for i, y in enumerate(digits.y_train)]
        _write_images(directory, train, digits.x_train)
        return [f"{len(train):,} training images in {os.path.join(directory, 'train')}/<class>/",
                f"{len(test):,} test images in {os.path.join(directory, 'test')}/<class>/"]
    pool = [f"unlabelled/img_{i:05d}.png" for i in range(len(digits.x_train))]
    _write_images(directory, pool, digits.x_train)
    with open(os.path.join(directory, "classes.txt"), "w", encoding="utf-8") as f:
        f.write("".join(name + "\n" for name in names))
    wrote = [f"{len(pool):,} unlabelled images in {os.path.join(directory, 'unlabelled')}/",
             f"{len(test):,} test images in {os.path.join(directory, 'test')}/<class>/",
             f"the {len(names)} class names in {os.path.join(directory, 'classes.txt')}"]
    if truth:
        with open(truth, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "label"])
            writer.writerows((name, names[y]) for name, y in zip(pool, digits.y_train))
        wrote.append(f"the true class of every unlabelled image in {truth}")
    return wrote


def _write_images(directory: str, files: list[str], images: np.ndarray) -> list[str]:
    """Writes images (N, 8, 8, 1) uint8 as 16x16 grayscale PNGs at directory/files[i]."""
    from PIL import Image

    for name, image in zip(files, images):
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        big = np.repeat(np.repeat(image[..., 0], SCALE, axis=0), SCALE, axis=1)
        Image.fromarray(big).save(path)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("directory", metavar="DIR", help="a new or empty folder")
    parser.add_argument("--layout", choices=("pool", "train"), default="pool",
                        help="pool: unlabelled/ + test/ + classes.txt (default); train: train/ + test/")
    parser.add_argument("--truth", metavar="PATH", help="(pool) write the unlabelled images' classes as a CSV")
    args = parser.parse_args(argv)
    try:
        wrote = write_example_folder(args.directory, args.layout, args.truth)
    except (ValueError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print("wrote " + "\nwrote ".join(wrote))
    print(f"next: python -m inas_jax.main --dataset=folder:{args.directory} --workdir=runs/my_digits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
