"""Data parallelism over forced host devices: same accuracy as one device, divisibility checked."""
import json
import os
import subprocess
import sys

import jax

# A digits training and its test accuracy on however many devices the process has: run as a script
# (`python -c`) in a process with forced host devices, or exec'd in this one.
SCRIPT = """
import json, jax
from inas_jax.data import load_digits
from inas_jax.config import ModelConfig, TrainConfig
from inas_jax.model.network import build_model
from inas_jax.model.search_space import Arch
from inas_jax.loop.train import check_batch_divisible, evaluate, train


def measure():
    d = load_digits()
    cfg = TrainConfig(epochs=6, epoch_size=1024, batch_size=64, flip=False, max_shift=1, max_rotation=10.0)
    model = build_model(Arch(1, 2), 10, ModelConfig(width=8), d.channel_stats)
    r = train(model, d.x_train, d.y_train, cfg, jax.random.key(0))
    acc = evaluate(r.model, r.state, d.x_test, d.y_test)["accuracy"]
    leaf = r.state.params["head"]["kernel"]
    out = {"devices": jax.device_count(), "acc": acc, "loss": r.history[-1]["loss"],
           "replicated": leaf.sharding.is_fully_replicated, "on": len(leaf.sharding.device_set)}
    try:
        check_batch_divisible(60)
    except ValueError as err:
        out["error"] = str(err)
    return out


if __name__ == "__main__":
    print(json.dumps(measure()))
"""


def _run(devices):
    """SCRIPT's measurement on `devices` host devices: in this process when it has that many (no second
    jax start), else in a child process forced to them."""
    if jax.device_count() == devices and jax.default_backend() == "cpu":
        namespace = {"__name__": "in_process"}
        exec(SCRIPT, namespace)
        return namespace["measure"]()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_eight_devices_match_one_device():
    one, eight = _run(1), _run(8)
    assert one["devices"] == 1 and eight["devices"] == 8
    assert eight["replicated"] and eight["on"] == 8
    assert one["acc"] > 0.85 and abs(one["acc"] - eight["acc"]) < 0.03, (one, eight)
    assert abs(one["loss"] - eight["loss"]) < 0.05 * one["loss"] + 0.01, (one, eight)
    assert "--batch_size=60 is not divisible by the 8 devices" in eight["error"]
    assert "error" not in one
