"""Reading a person's answers: the filled round_NN.csv, and a Label Studio export turned into one.

Every check names the row and the value: a label that is not a class, a row whose file was not
queried (an edited `file` column), a repeated or a missing row. Empty labels mean the person is not
done: WaitingForLabels with how many are missing.
"""
from __future__ import annotations

import csv
import io
import json
import pathlib

from inas_jax.oracle import LabelError, WaitingForLabels
from inas_jax.oracle.requests import COLUMNS


def read_rows(path: pathlib.Path) -> list[dict]:
    """The CSV's rows as dicts (row numbers count the header as row 1); LabelError if unreadable."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except FileNotFoundError:
        raise LabelError(f"{path} is missing: it lists the images to label; rerun to write it again") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LabelError(f"{path} cannot be read as CSV ({err})") from None
    if "file" not in header or "label" not in header:
        raise LabelError(f"{path}: the header {','.join(header)!r} lacks 'file' or 'label' (expected "
                         f"{','.join(COLUMNS)})")
    return rows


def checked_answers(rows: list[dict], where: str, asked: list[list], classes: tuple[str, ...]) -> dict[str, int]:
    """{file: class index} of the rows answering `asked` ([pool index, file]); raises LabelError on the
    first bad row, WaitingForLabels if labels are still empty."""
    wanted, seen, given, empty = {f for _, f in asked}, {}, {}, 0
    for n, row in enumerate(rows, start=2):
        file, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
        if file not in wanted:
            raise LabelError(f"{where} row {n}: file {file!r} was not queried in this round (the file column must "
                             "stay as written)")
        if file in seen:
            raise LabelError(f"{where} row {n}: file {file!r} is listed twice (rows {seen[file]} and {n})")
        seen[file] = n
        if not label:
            empty += 1
        elif label not in classes:
            raise LabelError(f"{where} row {n}: label {label!r} is not a class; the classes are "
                             f"{', '.join(classes)} (new classes are refused)")
        else:
            given[file] = classes.index(label)
    missing = [f for _, f in asked if f not in seen]
    if missing:
        raise LabelError(f"{where}: {len(missing)} queried file(s) have no row, e.g. {missing[0]!r} (was a row "
                         "deleted?)")
    if empty:
        raise WaitingForLabels(f"{empty} of {len(asked)} labels are still empty in {where}" if given else
                               f"{len(asked)} images to label: fill the label column of {where} with class names "
                               f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}; the images are "
                               "shown in the .png beside it), or label the .tasks.json beside it in Label Studio and "
                               "import its export with inas-jax-labels import")
    return given


def read_answers(path: pathlib.Path, asked: list[list], classes: tuple[str, ...]) -> dict[str, int]:
    """{file: class index} from the filled round_NN.csv at path (see checked_answers)."""
    return checked_answers(read_rows(path), str(path), asked, classes)


def label_studio_rows(export_path: pathlib.Path) -> list[dict]:
    """[{'file', 'label', 'round'}] of a Label Studio JSON export of round tasks: each task's newest
    annotation that was not cancelled (label '' where there is none). LabelError if it is not one."""
    try:
        tasks = json.loads(export_path.read_text(encoding="utf-8"))
        if not isinstance(tasks, list):
            raise ValueError("expected a JSON list of tasks (Label Studio's JSON export)")
        rows = []
        for task in tasks:
            annotations = [a for a in task["annotations"] if not a.get("was_cancelled")]  # a task file has none
            annotations.sort(key=lambda a: (a.get("updated_at") or a.get("created_at") or "", a.get("id", 0)))
            choices = [r["value"]["choices"] for a in annotations[-1:] for r in a.get("result", [])
                       if r.get("type") == "choices"]
            rows.append({"file": task["data"]["file"], "round": task["data"].get("round"),
                         "label": choices[0][0] if choices and choices[0] else ""})
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise LabelError(f"{export_path} is not a Label Studio JSON export of inas-jax tasks ({err!r})") from None
    return rows


def filled_csv(request_text: str, rows: list[dict]) -> str:
    """The request CSV (its text) with the label column filled from rows ({'file', 'label'})."""
    labels = {r["file"]: r["label"] for r in rows}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in csv.DictReader(io.StringIO(request_text)):
        writer.writerow({**row, "label": labels.get(row["file"], row.get("label") or "")})
    return out.getvalue()
