"""A person answers the queries through files in WORKDIR/labels/.

When a round needs labels nobody has given, the oracle writes the request (requests.py: round_NN.csv
to fill, round_NN.png, round_NN.tasks.json for Label Studio) and raises WaitingForLabels; the run
exits with status 3. Rerun, it reads the filled CSV, checks every row (answers.py) and commits the
answers at once to answers.json (atomically): from then on the CSV is never read again, and all.csv
lists every labelled file with its label and round.

labels/answers.json = {"classes": [K names], "asked": {"NN": [[pool index, file], ...]},
                       "answers": [[pool index, file, class index, round], ...]}
"""
from __future__ import annotations

import csv
import io
import json
import pathlib

import numpy as np

from inas_jax.oracle import LabelError
from inas_jax.oracle.answers import read_answers
from inas_jax.oracle.requests import csv_path, write_request
from inas_jax.runtime.atomic import write_json, write_text

STATE = "answers.json"


def load_state(labels_dir: pathlib.Path, classes: tuple[str, ...] | None = None) -> dict:
    """answers.json (or, given the classes, a fresh state). Raises LabelError if it is damaged or names
    other classes than `classes`."""
    path = labels_dir / STATE
    if not path.exists() and classes is not None:
        return {"classes": list(classes), "asked": {}, "answers": []}
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or set(state) != {"classes", "asked", "answers"}:
            raise ValueError("expected an object with 'classes', 'asked' and 'answers'")
    except (ValueError, OSError) as err:
        raise LabelError(f"{path} is unreadable ({err}); it holds the answers given so far: restore it "
                         "from a backup") from None
    if classes is not None and list(state["classes"]) != list(classes):
        raise LabelError(f"{path} holds answers for the classes {state['classes']}, not {list(classes)}; "
                         "the folder's classes changed: restore them or use another --workdir")
    return state


def write_all_csv(labels_dir: pathlib.Path, state: dict, initial: list[tuple[int, str, int]]) -> None:
    """all.csv: file,label,round of every labelled file (the folder's labelled ones in round 1)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "label", "round"])
    for _, file, label, round_ in [*[(i, f, y, 1) for i, f, y in initial], *state["answers"]]:
        writer.writerow([file, state["classes"][label], round_])
    write_text(labels_dir / "all.csv", out.getvalue())


class PersonOracle:
    """Asks a person for the labels of pool points, through files in labels_dir.

    classes: the K class names; files: (N,) each pool image's path relative to the image folder;
    images: (N, H, W, C) uint8 pool images (for the contact sheet); initial: {pool index: label} of
    the images the folder gives labelled.
    """

    wants_guesses = True

    def __init__(self, labels_dir: str | pathlib.Path, classes: tuple[str, ...], files: tuple[str, ...],
                 images: np.ndarray, initial: dict[int, int] | None = None):
        self.dir = pathlib.Path(labels_dir)
        self.classes, self.files, self.images = tuple(classes), tuple(files), images
        self.initial = dict(initial or {})
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = load_state(self.dir, self.classes)
        if self.state["answers"] or self.initial:  # all.csv again, in case a kill came between the two writes
            self._commit(self.state)

    def known(self) -> dict[int, int]:
        """{pool index: class index} of every label given: the folder's and the person's."""
        return {**self.initial, **{int(i): int(y) for i, _, y, _ in self.state["answers"]}}

    def ask(self, round_: int, idx: np.ndarray, probabilities: np.ndarray | None) -> None:
        """Writes the request for round `round_` unless it is already out (a resumed round asks again)."""
        key, known = f"{round_:02d}", self.known()
        asked = [[int(i), self.files[i]] for i in idx if int(i) not in known]
        if not asked or self.state["asked"].get(key) == asked:
            return
        write_request(self.dir, round_, self.images, self.classes, asked, probabilities)
        self._commit({**self.state, "asked": {**self.state["asked"], key: asked}})

    def labels(self, round_: int, idx: np.ndarray) -> np.ndarray:
        known = self.known()
        missing = [int(i) for i in idx if int(i) not in known]
        if missing:
            key = f"{round_:02d}"
            asked = self.state["asked"].get(key)
            if asked is None or sorted(i for i, _ in asked) != sorted(missing):
                asked = [[i, self.files[i]] for i in missing]
                write_request(self.dir, round_, self.images, self.classes, asked, None)
                self._commit({**self.state, "asked": {**self.state["asked"], key: asked}})
            given = read_answers(csv_path(self.dir, round_), asked, self.classes)
            self._commit({**self.state, "answers": [*self.state["answers"],
                                                    *[[i, f, given[f], round_] for i, f in asked]]})
            known = self.known()
        return np.asarray([known[int(i)] for i in idx], np.int32)

    def _commit(self, state: dict) -> None:
        write_json(self.dir / STATE, state)
        self.state = state
        write_all_csv(self.dir, state, [(i, self.files[i], y) for i, y in sorted(self.initial.items())])
