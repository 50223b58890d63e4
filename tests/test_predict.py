"""The model a run hands back: inas_jax.predict and inas-jax-predict classify image files with the
latest round's network exactly as the run evaluated it."""
import csv
import io
import subprocess
import sys

import numpy as np
import pytest

from conftest import SUBPROCESS_TIMEOUT, TINY, results_of, run_cli
from inas_jax.predict import cli, load_network, predict_files
from inas_jax.store import WorkdirError
from test_person import write_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """A one-round fixed-architecture run on a digits image folder: (folder, workdir, truth of test files)."""
    root = tmp_path_factory.mktemp("predict")
    write_folder(root / "images", digits, "train", n_train=100, n_test=40)
    workdir = root / "w"
    assert run_cli([f"--dataset=folder:{root / 'images'}", *TINY, "--strategy=fixed", "--arch=1,1",
                    "--budget=40", f"--workdir={workdir}"]) == 0
    return root / "images", workdir


CLASSES = {str(k) for k in range(10)}


def test_predictions_reproduce_the_runs_test_accuracy(trained):
    images, workdir = trained
    net = load_network(workdir)
    assert net.round == 1 and set(net.classes) == CLASSES and net.image_shape == (8, 8, 1)
    rows = list(predict_files(net, [str(images / "test")], top_k=3, batch_size=16))
    assert len(rows) == 40
    truth = [file.split("/")[-2] for file, _ in rows]  # test/<class>/img.png
    accuracy = np.mean([top[0][0] == label for (_, top), label in zip(rows, truth)])
    assert accuracy == pytest.approx(results_of(workdir)["rounds"][-1]["test_accuracy"], abs=1e-9)
    for _, top in rows:
        probabilities = [p for _, p in top]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6


def test_the_command_writes_csv(trained):
    images, workdir = trained
    files = sorted(str(p) for p in (images / "test" / "3").glob("*.png"))[:2]
    cmd = [sys.executable, "-m", "inas_jax.predict.cli", f"--workdir={workdir}", "--top_k=2", *files]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0] == ["file", "predicted_1", "confidence_1", "predicted_2", "confidence_2"]
    assert [r[0] for r in rows[1:]] == files and all(r[1] in CLASSES and r[3] in CLASSES for r in rows[1:])


def test_the_command_refuses_in_one_line(trained, tmp_path, capsys):
    images, workdir = trained
    (tmp_path / "broken.png").write_bytes(b"not an image")
    any_image = str(next((images / "test" / "3").glob("*.png")))
    for args, message in (([f"--workdir={tmp_path}", any_image], "holds no trained network"),
                          ([f"--workdir={workdir}", str(tmp_path / "broken.png")], "broken.png"),
                          ([f"--workdir={workdir}", str(tmp_path / "missing.png")], "does not exist"),
                          ([f"--workdir={workdir}", "--top_k=11", any_image], "top_k=11")):
        assert cli.main(args) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], captured.err
        assert captured.out == ""
