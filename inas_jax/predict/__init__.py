"""The model a run hands back: its latest round's network classifying image files.

  from inas_jax.predict import load_network, predict_files
  net = load_network("runs/my_digits")                  # the newest round's network and class names
  for file, top in predict_files(net, ["a.png", "more_images/"], top_k=2):
      print(file, top)                                   # top: [(class name, probability), ...]

Images are decoded and resized as the run's image folder was (inas_jax.data.folder.decode_images),
in batches, on whatever device jax has. `inas-jax-predict` (cli.py) writes the same as CSV.
"""
from __future__ import annotations

import pathlib
from typing import Iterator

import numpy as np

from inas_jax.data import DataError
from inas_jax.data.folder import IMAGE_EXTENSIONS, decode_images
from inas_jax.loop.train import predict_variables
from inas_jax.queries import uncertainty
from inas_jax.store.network import Network, load_network

__all__ = ["Network", "expand", "load_network", "predict_files"]

CHUNK = 1024  # images decoded and classified at once: memory O(CHUNK), not O(files)


def expand(paths: list[str]) -> list[str]:
    """The image files of `paths`: files as given, directories walked (sorted) for image extensions.
    DataError naming a path that does not exist, or when no image is found."""
    files = []
    for path in paths:
        p = pathlib.Path(path)
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*")
                            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
        elif p.is_file():
            files.append(str(p))
        else:
            raise DataError(f"{path!r} does not exist")
    if not files:
        raise DataError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {' '.join(paths)}")
    return files


def predict_files(net: Network, paths: list[str], top_k: int = 1,
                  batch_size: int = 256) -> Iterator[tuple[str, list[tuple[str, float]]]]:
    """(file, [(class name, probability)] of the top_k classes, most probable first) per image file of
    `paths` (expand), in order, CHUNK files at a time; raises DataError on an unreadable image."""
    if not 1 <= top_k <= len(net.classes):
        raise ValueError(f"top_k={top_k} must be in [1, {len(net.classes)}] (the classes)")
    height, _, channels = net.image_shape
    files = expand(paths)
    for start in range(0, len(files), CHUNK):
        chunk = files[start:start + CHUNK]
        images = decode_images(chunk, height, channels)
        logits, _ = predict_variables(net.model, net.variables, images, batch_size)
        probabilities = uncertainty.probabilities(logits)
        order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :top_k]
        for file, p, top in zip(chunk, probabilities, order):
            yield file, [(net.classes[k], float(p[k])) for k in top]

