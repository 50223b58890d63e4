"""The README's "your own images" walkthrough, command for command (with the tiny run's settings added
to the driver's commands): a folder from the bundled digits, the run waiting for labels, the labels
filled from the truth file, the next round, and predictions with the latest network."""
import os
import pathlib
import re
import shlex
import subprocess
import sys

from conftest import SUBPROCESS_TIMEOUT, TINY

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def walkthrough_commands() -> list[list[str]]:
    """The commands of the README's bash blocks between "2. Your own images" and "3. The paper's"."""
    text = README.read_text()
    section = text[text.index("**2. Your own images"):text.index("**3. The paper's protocol")]
    lines = [line.split("#")[0].split("|")[0].strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)
             for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_the_readme_walkthrough_runs_as_written(tmp_path):
    commands = walkthrough_commands()
    assert [c[0] for c in commands] == ["python", "python", "inas-jax-labels", "python", "inas-jax-predict"]
    bin_dir = os.path.dirname(sys.executable)  # the console scripts beside this Python
    statuses, outputs = [], []
    for command in commands:
        program = sys.executable if command[0] == "python" else os.path.join(bin_dir, command[0])
        extra = TINY if command[1:3] == ["-m", "inas_jax.main"] else []
        proc = subprocess.run([program, *command[1:], *extra], cwd=tmp_path, capture_output=True, text=True,
                              timeout=SUBPROCESS_TIMEOUT)
        statuses.append(proc.returncode)
        outputs.append(proc.stdout + proc.stderr)
    assert statuses == [0, 3, 0, 3, 0], "\n".join(o[-2000:] for o in outputs)
    assert "round_01.csv" in outputs[1] and "round_02.csv" in outputs[3]
    rows = outputs[4].splitlines()
    assert rows[0] == "file,predicted,confidence" and len(rows) > 10 and rows[1].startswith("my_digits/test/7/")
    assert len((tmp_path / "runs" / "my_digits" / "labels" / "all.csv").read_text().splitlines()) == 1 + 40
