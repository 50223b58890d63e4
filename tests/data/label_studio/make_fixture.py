"""Write the inputs the recorded exports came from: 7 PNGs, the round 1/2 task files, the answers.

  python tests/data/label_studio/make_fixture.py /tmp/lsdemo

writes OUT/DIR/unlabelled/*.png and OUT/DIR/classes.txt (the image folder), OUT/WORK/labels/
round_0{1,2}.tasks.json (the format inas-jax writes) and OUT/answers*.csv. Needs Pillow.
"""
from __future__ import annotations

import csv
import json
import sys
import urllib.parse
from pathlib import Path

from PIL import Image

NAMES = ["unlabelled/img_00003.png", "unlabelled/img_00017.png", "unlabelled/img_00042.png",
         "unlabelled/photo 7 (copy).png",  # a name that needs URL quoting
         "unlabelled/img_00058.png", "unlabelled/img_00101.png", "unlabelled/img_00230.png"]
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]  # class i is a solid 32x32 square of COLOURS[i]
ANSWERS = {  # file name -> its rows of (file, label): repeated files get several annotations
    "answers.csv": [(n, str(i % 3)) for i, n in enumerate(NAMES)],
    "answers_missing.csv": [(NAMES[4], "1")],  # with --skip=NAMES[5]; NAMES[6] is left unannotated
    "answers_two_annotations.csv": [(NAMES[4], "1"), (NAMES[4], "1"), (NAMES[5], "0"), (NAMES[5], "2"),
                                    (NAMES[6], "0")],
}


def task(name: str, round_: int, guess: str | None = None, score: float | None = None) -> dict:
    """One Label Studio task as inas-jax writes it, with the guess as a prediction if given."""
    t = {"data": {"image": "/data/local-files/?d=" + urllib.parse.quote(name), "file": name, "round": round_}}
    if guess is not None:
        t["predictions"] = [{"model_version": f"inas-jax round {round_ - 1}", "score": score,
                             "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [guess]}}]}]
    return t


def main(out: Path) -> None:
    """Write everything under out."""
    (out / "DIR/unlabelled").mkdir(parents=True, exist_ok=True)
    (out / "WORK/labels").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(NAMES):
        Image.new("RGB", (32, 32), COLOURS[i % 3]).save(out / "DIR" / name)
    (out / "DIR/classes.txt").write_text("0\n1\n2\n")
    rounds = {1: [task(n, 1) for n in NAMES[:4]],
              2: [task(n, 2, g, s) for n, g, s in zip(NAMES[4:], ["1", "1", "0"], [0.83, 0.61, 0.47])]}
    for r, tasks in rounds.items():
        (out / f"WORK/labels/round_{r:02d}.tasks.json").write_text(json.dumps(tasks, indent=1))
    for fname, rows in ANSWERS.items():
        with open(out / fname, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["file", "label"])
            writer.writerows(rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
