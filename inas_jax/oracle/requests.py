"""A round's request to the person, three files under WORKDIR/labels/ (NN the round that uses them):

round_NN.csv         file,label,predicted,confidence: the image's path relative to the folder, an
                     empty label to fill, the current network's guess and its probability (empty in
                     the first round: no network yet), in the order queried
round_NN.png         a contact sheet of the batch, each image with its number and the guess
round_NN.tasks.json  the batch as Label Studio tasks, the guesses as pre-annotations
"""
from __future__ import annotations

import csv
import io
import json
import pathlib
import urllib.parse

import numpy as np

from inas_jax.runtime.atomic import write_atomic, write_text

COLUMNS = ("file", "label", "predicted", "confidence")
THUMB = 64  # contact-sheet thumbnail side, pixels
SHEET_COLUMNS = 10
CAPTION = 14  # caption height under each thumbnail, pixels


def csv_path(labels_dir: pathlib.Path, round_: int) -> pathlib.Path:
    return labels_dir / f"round_{round_:02d}.csv"


def guesses(classes: tuple[str, ...], probabilities: np.ndarray | None, n: int) -> list[tuple[str, str]]:
    """(predicted class name, confidence with 4 decimals) per queried image; empty strings without a network."""
    if probabilities is None:
        return [("", "")] * n
    top = np.argmax(probabilities, -1)
    return [(classes[k], f"{float(probabilities[j, k]):.4f}") for j, k in enumerate(top)]


def request_csv(asked: list[list], guessed: list[tuple[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for (_, file), (predicted, confidence) in zip(asked, guessed):
        writer.writerow([file, "", predicted, confidence])
    return out.getvalue()


def label_studio_tasks(asked: list[list], guessed: list[tuple[str, str]], round_: int) -> list[dict]:
    """Label Studio tasks: the image served from the folder (local-files serving, the folder as its
    document root), the file and round to import the answers back, and the guess as a prediction."""
    tasks = []
    for (_, file), (predicted, confidence) in zip(asked, guessed):
        task = {"data": {"image": "/data/local-files/?d=" + urllib.parse.quote(file), "file": file, "round": round_}}
        if predicted:
            task["predictions"] = [{"model_version": f"inas-jax round {round_ - 1}", "score": float(confidence),
                                    "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                                "value": {"choices": [predicted]}}]}]
        tasks.append(task)
    return tasks


def contact_sheet(images: np.ndarray, guessed: list[tuple[str, str]]):
    """A PIL image of images (b, H, W, C) uint8 in a grid, each captioned 'number: guess confidence'."""
    from PIL import Image, ImageDraw
    rows = -(-len(images) // SHEET_COLUMNS)
    sheet = Image.new("RGB", (SHEET_COLUMNS * THUMB, rows * (THUMB + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, (image, (predicted, confidence)) in enumerate(zip(images, guessed)):
        thumb = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).convert("RGB")
        thumb = thumb.resize((THUMB, THUMB), Image.Resampling.NEAREST)
        x, y = (j % SHEET_COLUMNS) * THUMB, (j // SHEET_COLUMNS) * (THUMB + CAPTION)
        sheet.paste(thumb, (x, y))
        caption = f"{j + 1}: {predicted} {confidence[:4]}" if predicted else f"{j + 1}"
        draw.text((x + 2, y + THUMB + 1), caption, fill="black")
    return sheet


def files_listed(path: pathlib.Path) -> list[str] | None:
    """The `file` column of the CSV at path, or None if there is none or it cannot be read."""
    try:
        with open(path, newline="") as f:
            return [row.get("file") for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def write_request(labels_dir: pathlib.Path, round_: int, pool_images: np.ndarray, classes: tuple[str, ...],
                  asked: list[list], probabilities: np.ndarray | None) -> None:
    """The three request files of round `round_` for asked ([pool index, file] in query order) with the
    network's probabilities (b, K) or None. A CSV already listing these files is kept (with whatever
    labels it holds): a request written again after a kill never erases answers."""
    guessed = guesses(classes, probabilities, len(asked))
    path = csv_path(labels_dir, round_)
    if files_listed(path) != [file for _, file in asked]:
        write_text(path, request_csv(asked, guessed))
    write_text(path.with_suffix(".tasks.json"), json.dumps(label_studio_tasks(asked, guessed, round_), indent=1))
    sheet = contact_sheet(pool_images[np.asarray([i for i, _ in asked])], guessed)
    write_atomic(path.with_suffix(".png"), lambda f: sheet.save(f, format="PNG"))
