"""Shared fixtures. Tests run on the CPU with tiny widths and few steps."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One directory of caches for the whole test session, kept out of the user's own: the persistent
# compilation cache (xla/) and the decoded image folders (folders/). The process that starts the
# session makes it; its xdist workers, and every driver run a test starts in a subprocess, inherit it
# through the environment. So a program compiles once per session, in whichever process needs it
# first, and every other process reads it from disk.
import tempfile  # noqa: E402

SESSION_CACHE = "INAS_JAX_TEST_SESSION_CACHE"
if not (os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(SESSION_CACHE)):
    os.environ[SESSION_CACHE] = tempfile.mkdtemp(prefix="inas_jax_test_caches_")
os.environ["INAS_JAX_COMPILATION_CACHE"] = os.path.join(os.environ[SESSION_CACHE], "xla")
os.environ["INAS_JAX_FOLDER_CACHE"] = os.path.join(os.environ[SESSION_CACHE], "folders")

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from inas_jax.runtime.compilation import enable_persistent_cache
from inas_jax.data import load_digits

enable_persistent_cache()

CIFAR10_NPZ = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10.npz"
# The one tiny digits run every test derives its settings from: 40 -> 60 labels, width 4, two epochs
# of 128 samples, 8 MC passes (settings by name, as RunConfig.replace takes them).
TINY_SETTINGS = dict(initial_size=40, query_sizes=(20,), budget=60, epochs=2, epoch_size=128, batch_size=32,
                     inas_epochs=1, width=4, mc_passes=8)
# Seconds any subprocess of a test may take before the test fails instead of hanging.
SUBPROCESS_TIMEOUT = 600


def as_flags(settings: dict) -> list[str]:
    """Driver flags of settings by name: {"budget": 60, "query_sizes": (20,)} -> ["--budget=60", "--query_sizes=20"]."""
    return [f"--{name}={','.join(map(str, value)) if isinstance(value, tuple) else value}"
            for name, value in settings.items()]


# The tiny run's driver flags.
TINY = as_flags(TINY_SETTINGS)


def tiny_config(**changes):
    """The tiny run's RunConfig (the cpu preset on digits), with `changes` by name."""
    from inas_jax.config import RunConfig
    return RunConfig().replace(**{**TINY_SETTINGS, **changes})


def run_cli(args):
    """The driver's main() in this process with absl flags `args`; returns its exit status."""
    from inas_jax import main as cli
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["inas_jax"] + args)
    return cli.main(["inas_jax"])


def one_error_line(capsys) -> str:
    """The one `error:` line a refused run printed to stderr (log lines, which start with the time, aside)."""
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line[:2].isdigit()]
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


def results_of(workdir):
    with open(pathlib.Path(workdir) / "results.json") as f:
        return json.load(f)


def without_timings(results):
    for r in results["rounds"]:
        r.pop("seconds")
        r.pop("cpu_seconds", None)
    return results


def crash_at_epoch_call(monkeypatch, n):
    """Makes the n-th call of train.train_epoch raise KeyboardInterrupt (a crash inside a training);
    returns the real train_epoch."""
    from inas_jax.loop import train as train_mod
    real, calls = train_mod.train_epoch, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", crashing)
    return real


def normal(shape, seed=0, scale=1.0):
    """float32 test data drawn from numpy's standard normal. (An eager jax.random.normal compiles a
    threefry and erf_inv program for each new shape: about 2 s of XLA:CPU every time.)"""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, jnp.float32)


def init_variables(module, key, images):
    """The variables of the GridResNet `module` for `images` (B, H, W, C), from `key`: Model.init's
    compiled initialisation (XLA:CPU's level 1, the values of the plain jitted init, as
    test_models.py::test_init_compiled_at_a_lower_optimisation_level_... shows). Compiled at full
    optimisation, or run op by op, its random draw per parameter takes 10-20 s of XLA."""
    from inas_jax.model.network import Model
    channels = images.shape[-1]
    return Model(module, np.zeros(channels, np.float32), np.ones(channels, np.float32)).init(key, images.shape[1:])


def pytest_unconfigure(config):
    """The process that made the session's caches removes them at the end (workers leave them)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(os.environ[SESSION_CACHE], ignore_errors=True)


@pytest.fixture(scope="session")
def digits():
    return load_digits()
