"""One run over several processes (jax.distributed over localhost, gloo collectives on the CPU): the
results of one process with as many devices, and a resume after every process was killed."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

from conftest import SUBPROCESS_TIMEOUT, TINY, without_timings

# Two rounds of a fixed network under softmax response: training, evaluation and a query, each
# data-parallel over two devices.
ARGS = [sys.executable, "-m", "inas_jax.main", *TINY, "--strategy=fixed", "--arch=1,1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_processes(workdir, env) -> list[subprocess.Popen]:
    """The run as two processes of one device each, process 0 the writer."""
    address = f"localhost:{free_port()}"
    return [subprocess.Popen([*ARGS, f"--workdir={workdir}", f"--coordinator_address={address}", "--num_processes=2",
                              f"--process_id={i}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(2)]


def finish(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        out, _ = proc.communicate(timeout=SUBPROCESS_TIMEOUT)
        assert proc.returncode == 0, out[-3000:]
        # each compiles its own programs: on jax 0.12 one read from the persistent cache hangs
        assert "compilation cache off" in out


def committed_rounds(workdir) -> int:
    try:
        return len(json.loads((workdir / "results.json").read_text())["rounds"])
    except (OSError, ValueError):
        return 0


def test_two_processes_give_the_results_of_one_process_with_two_devices(tmp_path):
    one = subprocess.run([*ARGS, f"--workdir={tmp_path / 'one'}"], capture_output=True, text=True,
                         timeout=SUBPROCESS_TIMEOUT,
                         env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    assert one.returncode == 0, one.stderr[-3000:]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    procs = start_processes(tmp_path / "two", env)
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while committed_rounds(tmp_path / "two") < 1 and all(p.poll() is None for p in procs):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for proc in procs:  # every process killed after round 1: the rerun resumes from the writer's checkpoint
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert committed_rounds(tmp_path / "two") == 1
    finish(start_processes(tmp_path / "two", env))
    single = json.loads((tmp_path / "one" / "results.json").read_text())
    several = json.loads((tmp_path / "two" / "results.json").read_text())
    # The same programs over the same two devices: identical floats, not merely close ones (an
    # all-reduce of two operands has one order). Only the wall and CPU times differ.
    assert several["labelled"] == single["labelled"]
    assert without_timings(several)["rounds"] == without_timings(single)["rounds"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in (tmp_path / "one").iterdir() if not p.name.startswith("."))
