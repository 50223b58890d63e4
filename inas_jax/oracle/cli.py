"""inas-jax-labels: a person's answers from elsewhere into a waiting run.

  inas-jax-labels import WORKDIR EXPORT.json   # a Label Studio JSON export of round_NN.tasks.json

It fills the label column of the waiting round's round_NN.csv with the export's annotations (each
task's newest one not cancelled), after the same checks as the run's (every file queried, every
label a class), then the same inas-jax command resumes the run. Exit 0, or 2 with one line and
nothing changed. Loads no jax.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from inas_jax.oracle import LabelError, WaitingForLabels
from inas_jax.oracle.answers import checked_answers, filled_csv, label_studio_rows
from inas_jax.oracle.person import STATE, load_state
from inas_jax.oracle.requests import csv_path
from inas_jax.runtime.atomic import write_text


def waiting_round(state: dict, rows: list[dict]) -> int:
    """The round the export answers: the one its tasks name, which must be asked and not yet answered."""
    answered = {round_ for *_, round_ in state["answers"]}
    named = {r["round"] for r in rows}
    if len(named) != 1 or not isinstance(next(iter(named)), int):
        raise LabelError(f"the export's tasks name the rounds {sorted(map(str, named))}: export one round's tasks")
    round_ = next(iter(named))
    if f"{round_:02d}" not in state["asked"]:
        raise LabelError(f"round {round_} has asked for no labels in this workdir")
    if round_ in answered:
        raise LabelError(f"round {round_}'s labels were accepted already; the run has moved on")
    return round_


def import_export(workdir: pathlib.Path, export: pathlib.Path) -> str:
    """Fills the waiting round's CSV from a Label Studio export; returns what it did, in one line."""
    labels_dir = workdir / "labels"
    if not (labels_dir / STATE).exists():
        raise LabelError(f"{workdir} has no labels/{STATE}: it is not a run waiting for a person's labels")
    state = load_state(labels_dir)
    rows = label_studio_rows(export)
    round_ = waiting_round(state, rows)
    asked, path = state["asked"][f"{round_:02d}"], csv_path(labels_dir, round_)
    try:
        request = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise LabelError(f"{path} cannot be read ({err.strerror or err}); rerun the inas-jax command to write it "
                         "again") from None
    try:
        checked_answers(rows, str(export), asked, tuple(state["classes"]))
        still = ""
    except WaitingForLabels:
        still = f" ({sum(not r['label'] for r in rows)} tasks have no annotation: their labels stay empty)"
    write_text(path, filled_csv(request, rows))
    return (f"round {round_}: {sum(bool(r['label']) for r in rows)} labels written into {path}{still}; run the "
            "same inas-jax command again")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inas-jax-labels", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("import", help="fill the waiting round's CSV from a Label Studio JSON export")
    p.add_argument("workdir", type=pathlib.Path)
    p.add_argument("export", type=pathlib.Path)
    args = parser.parse_args(argv)
    try:
        print(import_export(args.workdir, args.export))
    except LabelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
