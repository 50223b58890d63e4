"""A person answering the queries (--oracle=person): the request files, every check of the answers,
exact equality with the simulated oracle, and the model handed back (inas-jax-predict)."""
import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import SUBPROCESS_TIMEOUT, TINY, crash_at_epoch_call, results_of, run_cli, without_timings
from inas_jax.oracle import LabelError, WaitingForLabels
from inas_jax.oracle.person import PersonOracle

CLASSES = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")


def write_folder(root: pathlib.Path, digits, layout: str, n_train: int = 200, n_test: int = 60) -> dict:
    """The first digits as PNGs: layout "train" (train/<class>/, test/<class>/) or "pool" (unlabelled/,
    test/<class>/, classes.txt). Returns {file relative to root: class name} of the pool."""
    truth = {}
    for split, xs, ys, n in (("train", digits.x_train, digits.y_train, n_train),
                             ("test", digits.x_test, digits.y_test, n_test)):
        for j in range(n):
            if split == "train" and layout == "pool":
                rel = f"unlabelled/img_{j:04d}.png"
            else:
                rel = f"{split}/{ys[j]}/img_{j:04d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(xs[j][..., 0]).save(root / rel)
            if split == "train":
                truth[rel] = str(ys[j])
    if layout == "pool":
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return truth


def answer(csv_path: pathlib.Path, truth: dict, edit=None) -> None:
    """Fills the label column of a request CSV with the true classes (edit(rows) may then spoil them)."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["label"] = truth[row["file"]]
    if edit:
        edit(rows)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "predicted", "confidence"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture()
def oracle(tmp_path):
    images = np.arange(6 * 8 * 8, dtype=np.uint8).reshape(6, 8, 8, 1)
    files = tuple(f"unlabelled/{name}.png" for name in "abcdef")
    return PersonOracle(tmp_path / "labels", ("cat", "dog"), files, images, {0: 1})


def test_a_request_lists_the_queried_files_with_the_guesses(oracle):
    probabilities = np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)
    oracle.ask(2, np.array([3, 1]), probabilities)
    rows = list(csv.DictReader(open(oracle.dir / "round_02.csv")))
    assert rows == [{"file": "unlabelled/d.png", "label": "", "predicted": "dog", "confidence": "0.8000"},
                    {"file": "unlabelled/b.png", "label": "", "predicted": "cat", "confidence": "0.9000"}]
    tasks = json.loads((oracle.dir / "round_02.tasks.json").read_text())
    assert tasks[0]["data"] == {"image": "/data/local-files/?d=unlabelled/d.png", "file": "unlabelled/d.png",
                                "round": 2}
    assert tasks[0]["predictions"][0]["result"][0]["value"] == {"choices": ["dog"]}
    assert tasks[0]["predictions"][0]["score"] == pytest.approx(0.8)
    sheet = Image.open(oracle.dir / "round_02.png")
    assert sheet.size == (640, 78)  # one row of ten 64-pixel thumbnails with their captions
    with pytest.raises(WaitingForLabels, match="2 images to label: fill the label column"):
        oracle.labels(2, np.array([0, 3, 1]))


def test_answers_are_committed_at_once_and_the_csv_is_never_read_again(oracle):
    oracle.ask(2, np.array([3, 1]), None)
    answer(oracle.dir / "round_02.csv", {"unlabelled/d.png": "cat", "unlabelled/b.png": "dog"})
    assert oracle.labels(2, np.array([0, 3, 1])).tolist() == [1, 0, 1]
    answer(oracle.dir / "round_02.csv", {"unlabelled/d.png": "dog", "unlabelled/b.png": "cat"})  # edited later
    again = PersonOracle(oracle.dir, oracle.classes, oracle.files, oracle.images, oracle.initial)  # a new process
    assert again.labels(2, np.array([0, 3, 1])).tolist() == [1, 0, 1]
    assert (oracle.dir / "all.csv").read_text() == ("file,label,round\nunlabelled/a.png,dog,1\n"
                                                    "unlabelled/d.png,cat,2\nunlabelled/b.png,dog,2\n")


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[0].update(label="bird"), "row 2: label 'bird' is not a class; the classes are cat, dog"),
    (lambda rows: rows[1].update(file="unlabelled/e.png"), "row 3: file 'unlabelled/e.png' was not queried"),
    (lambda rows: rows.append(dict(rows[0])), "row 4: file 'unlabelled/d.png' is listed twice (rows 2 and 4)"),
    (lambda rows: rows.pop(), "1 queried file(s) have no row, e.g. 'unlabelled/b.png'"),
])
def test_a_bad_answer_names_its_row_and_value_and_changes_nothing(oracle, edit, message):
    oracle.ask(2, np.array([3, 1]), None)
    answer(oracle.dir / "round_02.csv", {"unlabelled/d.png": "cat", "unlabelled/b.png": "dog"}, edit)
    state = (oracle.dir / "answers.json").read_text()
    with pytest.raises(LabelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        oracle.labels(2, np.array([0, 3, 1]))
    assert (oracle.dir / "answers.json").read_text() == state


def test_labels_still_empty_say_how_many(oracle):
    oracle.ask(2, np.array([3, 1]), None)
    answer(oracle.dir / "round_02.csv", {"unlabelled/d.png": "cat", "unlabelled/b.png": "dog"},
           lambda rows: rows[1].update(label=" "))
    with pytest.raises(WaitingForLabels, match="1 of 2 labels are still empty"):
        oracle.labels(2, np.array([0, 3, 1]))


def test_a_damaged_answers_file_is_an_error_not_a_fresh_start(oracle):
    oracle.ask(2, np.array([3, 1]), None)
    (oracle.dir / "answers.json").write_text("{")
    with pytest.raises(LabelError, match="answers.json is unreadable"):
        PersonOracle(oracle.dir, oracle.classes, oracle.files, oracle.images)


def _run_answering(args: list[str], workdir: pathlib.Path, truth: dict, capsys, monkeypatch=None) -> list[int]:
    """Runs the driver, answering each request CSV with the true labels, until it finishes; the exit
    statuses in order. With monkeypatch, the second run is interrupted at its second training epoch."""
    statuses = []
    for _ in range(6):
        if len(statuses) == 1 and monkeypatch is not None:
            crash_at_epoch_call(monkeypatch, 2)
        statuses.append(run_cli(args))
        if statuses[-1] not in (3, 130):
            return statuses
        err = capsys.readouterr().err
        if statuses[-1] == 130:
            monkeypatch.undo()
            continue
        assert "waiting for labels" in err and "run the same command again" in err, err
        answer(sorted((workdir / "labels").glob("round_*.csv"))[-1], truth)
    return statuses


def test_a_person_is_just_another_oracle(tmp_path, digits, capsys, monkeypatch):
    truth = write_folder(tmp_path / "images", digits, "train")
    common = [f"--dataset=folder:{tmp_path / 'images'}", *TINY, "--checkpoint_seconds=0"]
    assert run_cli([*common, f"--workdir={tmp_path / 'simulated'}"]) == 0
    person = tmp_path / "person"
    statuses = _run_answering([*common, "--oracle=person", f"--workdir={person}"], person, truth, capsys,
                              monkeypatch)  # interrupted inside round 1's search, then resumed
    assert statuses == [3, 130, 3, 0]
    simulated, answered = results_of(tmp_path / "simulated"), results_of(person)
    assert without_timings(answered)["rounds"] == without_timings(simulated)["rounds"]
    assert answered["labelled"] == simulated["labelled"]
    assert len((person / "labels" / "all.csv").read_text().splitlines()) == 1 + 60


def test_a_real_pool_asks_for_its_initial_set_then_shows_guesses(tmp_path, digits, capsys):
    images = tmp_path / "images"
    truth = write_folder(images, digits, "pool")
    workdir = tmp_path / "w"
    args = [f"--dataset=folder:{images}", *TINY, "--budget=60", f"--workdir={workdir}"]
    assert run_cli(args) == 3
    first = list(csv.DictReader(open(workdir / "labels" / "round_01.csv")))
    assert len(first) == 40 and all(r["predicted"] == "" and r["file"].startswith("unlabelled/") for r in first)
    answer(workdir / "labels" / "round_01.csv", truth, lambda rows: rows[5].update(label="ten"))
    capsys.readouterr()
    assert run_cli(args) == 2
    assert "row 7: label 'ten' is not a class" in capsys.readouterr().err
    answer(workdir / "labels" / "round_01.csv", truth)
    assert run_cli(args) == 3
    second = list(csv.DictReader(open(workdir / "labels" / "round_02.csv")))
    assert len(second) == 20 and all(r["predicted"] in CLASSES and 0 < float(r["confidence"]) <= 1 for r in second)
    assert "predictions" in json.loads((workdir / "labels" / "round_02.tasks.json").read_text())[0]
    assert results_of(workdir)["rounds"][0]["num_labelled"] == 40


def test_the_simulated_oracle_cannot_label_a_real_pool(tmp_path, digits, capsys):
    write_folder(tmp_path / "images", digits, "pool", n_train=80, n_test=10)
    assert run_cli([f"--dataset=folder:{tmp_path / 'images'}", *TINY, "--oracle=simulated",
                    f"--workdir={tmp_path / 'w'}"]) == 2
    assert "--oracle=simulated needs every label" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


LABEL_STUDIO = pathlib.Path(__file__).parent / "data" / "label_studio"


@pytest.fixture()
def exported_pool(tmp_path):
    """A person oracle over the files of the recorded Label Studio tasks (rounds 1 and 2), round 1 asked."""
    files = tuple(t["data"]["file"] for name in ("tasks_round_01.json", "tasks_round_02.json")
                  for t in json.loads((LABEL_STUDIO / name).read_text()))
    images = np.zeros((len(files), 8, 8, 1), np.uint8)
    oracle = PersonOracle(tmp_path / "w" / "labels", ("0", "1", "2"), files, images)
    with pytest.raises(WaitingForLabels):
        oracle.labels(1, np.arange(4))
    return oracle


def import_export(oracle, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inas_jax.oracle.cli", "import", str(oracle.dir.parent),
                           str(LABEL_STUDIO / name)], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)


def test_a_real_label_studio_export_answers_a_round(exported_pool):
    proc = import_export(exported_pool, "export_round_01.json")
    assert proc.returncode == 0 and "round 1: 4 labels written" in proc.stdout, proc.stderr
    assert exported_pool.labels(1, np.arange(4)).tolist() == [0, 1, 2, 0]
    exported_pool.ask(2, np.array([4, 5, 6]), np.eye(3, dtype=np.float32)[[1, 1, 0]])
    proc = import_export(exported_pool, "export_round_02_two_annotations.json")  # the newest annotation counts
    assert proc.returncode == 0, proc.stderr
    assert exported_pool.labels(2, np.arange(7)).tolist() == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize("name", ["export_round_02_missing.json", "export_round_02_missing_all_tasks.json"])
def test_a_skipped_or_unannotated_task_leaves_its_label_empty(exported_pool, name):
    assert import_export(exported_pool, "export_round_01.json").returncode == 0
    exported_pool.labels(1, np.arange(4))
    exported_pool.ask(2, np.array([4, 5, 6]), None)
    proc = import_export(exported_pool, name)
    assert proc.returncode == 0 and "1 labels written" in proc.stdout and "2 images have no label" in proc.stdout
    with pytest.raises(WaitingForLabels, match="2 of 3 labels are still empty"):
        exported_pool.labels(2, np.arange(7))


def test_an_export_of_another_round_or_run_is_refused_in_one_line(exported_pool):
    for name, message in (("export_round_02.json", "round 2 has asked for no labels"),
                          ("tasks_round_01.json", "is not a Label Studio JSON export")):
        proc = import_export(exported_pool, name)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert import_export(exported_pool, "export_round_01.json").returncode == 0
    exported_pool.labels(1, np.arange(4))
    proc = import_export(exported_pool, "export_round_01.json")
    assert proc.returncode == 2 and "accepted already" in proc.stderr


def test_fill_answers_the_waiting_round_from_a_file_of_known_labels(exported_pool):
    proc = subprocess.run([sys.executable, "-m", "inas_jax.oracle.cli", "fill", str(exported_pool.dir.parent),
                           str(LABEL_STUDIO / "answers.csv")], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0 and "round 1: 4 labels written" in proc.stdout, proc.stderr
    assert exported_pool.labels(1, np.arange(4)).tolist() == [0, 1, 2, 0]
