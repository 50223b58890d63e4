"""inas-jax-labels: a person's answers from elsewhere into a waiting run.

  inas-jax-labels import WORKDIR EXPORT.json   # a Label Studio JSON export of round_NN.tasks.json
  inas-jax-labels fill WORKDIR ANSWERS.csv     # a file,label CSV (e.g. the known answers of a demo)

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
from inas_jax.oracle.answers import checked_answers, filled_csv, label_studio_rows, read_rows
from inas_jax.oracle.person import STATE, load_state
from inas_jax.oracle.requests import csv_path
from inas_jax.runtime.atomic import write_text


def waiting_round(state: dict, named: set) -> int:
    """The round to answer: the one named (an export's tasks name theirs), else the one round asked
    and not yet answered; it must be asked and not yet answered."""
    answered = {round_ for *_, round_ in state["answers"]}
    if not named:
        named = {int(key) for key in state["asked"] if int(key) not in answered}
    if len(named) != 1 or not isinstance(next(iter(named)), int):
        raise LabelError(f"the answers are for the rounds {sorted(map(str, named))}: give one round's")
    round_ = next(iter(named))
    if f"{round_:02d}" not in state["asked"]:
        raise LabelError(f"round {round_} has asked for no labels in this workdir")
    if round_ in answered:
        raise LabelError(f"round {round_}'s labels were accepted already; the run has moved on")
    return round_


def answer_round(workdir: pathlib.Path, rows: list[dict], source: str, named: set, others_allowed: bool) -> str:
    """Fills the waiting round's CSV with rows ({'file', 'label'}), after the run's checks (a file not
    asked in that round is an error, or ignored if others_allowed; asked files without a row stay
    empty); says what it did."""
    labels_dir = workdir / "labels"
    if not (labels_dir / STATE).exists():
        raise LabelError(f"{workdir} has no labels/{STATE}: it is not a run waiting for a person's labels")
    state = load_state(labels_dir)
    round_ = waiting_round(state, named)
    asked, path = state["asked"][f"{round_:02d}"], csv_path(labels_dir, round_)
    wanted = {file for _, file in asked}
    rows = [r for r in rows if r["file"] in wanted or not others_allowed]
    given = {r["file"] for r in rows}  # Label Studio's default export leaves out tasks nobody annotated
    rows += [{"file": file, "label": ""} for file in wanted - given]
    try:
        request = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise LabelError(f"{path} cannot be read ({err.strerror or err}); rerun the inas-jax command to write it "
                         "again") from None
    try:
        checked_answers(rows, source, asked, tuple(state["classes"]))
        still = ""
    except WaitingForLabels:
        still = f" ({sum(not r['label'] for r in rows)} images have no label: theirs stay empty)"
    write_text(path, filled_csv(request, rows))
    return (f"round {round_}: {sum(bool(r['label']) for r in rows)} labels written into {path}{still}; run the "
            "same inas-jax command again")


def import_export(workdir: pathlib.Path, export: pathlib.Path) -> str:
    """Fills the waiting round's CSV from a Label Studio export of its tasks."""
    rows = label_studio_rows(export)
    return answer_round(workdir, rows, str(export), {r["round"] for r in rows} or {None}, others_allowed=False)


def fill(workdir: pathlib.Path, answers: pathlib.Path) -> str:
    """Fills the waiting round's CSV from a file,label CSV (any files; those of the round are used)."""
    return answer_round(workdir, read_rows(answers), str(answers), set(), others_allowed=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inas-jax-labels", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("import", help="fill the waiting round's CSV from a Label Studio JSON export")
    p.add_argument("workdir", type=pathlib.Path)
    p.add_argument("source", type=pathlib.Path, metavar="export")
    p = sub.add_parser("fill", help="fill the waiting round's CSV from a file,label CSV (e.g. known answers)")
    p.add_argument("workdir", type=pathlib.Path)
    p.add_argument("source", type=pathlib.Path, metavar="answers")
    args = parser.parse_args(argv)
    try:
        print({"import": import_export, "fill": fill}[args.command](args.workdir, args.source))
    except LabelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
