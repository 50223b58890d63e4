"""Every setting's range is checked before any work: one bad value per check of `config.validate`,
each refused with ConfigError naming the flag, and through the driver as one `error:` line, exit 2,
nothing written. The checks tested elsewhere (query, strategy, sizes, epochs, seed, finiteness,
dropout, conv_impl, xla_max_channels, train_passes) are in test_active.py and test_reliability.py."""
import os
import subprocess
import sys

import pytest

from conftest import SUBPROCESS_TIMEOUT, TINY, run_cli
from inas_jax.config import ConfigError, RunConfig, validate

# (setting, bad value, what the message says: anchored at its start where the message is the flag's own)
BAD_VALUES = [
    ("mc_passes", 0, r"^--mc_passes=0 must be positive"),
    ("mc_rate", 1.0, r"^--mc_rate=1.0 must be in \(0, 1\)"),
    ("mc_rate", 0.0, r"^--mc_rate=0.0 must be in \(0, 1\)"),
    ("mc_rate", -0.5, r"^--mc_rate=-0.5 must be in \(0, 1\)"),
    ("batch_size", 0, r"^--batch_size=0 must be positive"),
    ("epoch_size", 0, r"^--epoch_size=0 must be positive"),
    ("width", 0, r"^--width=0 must be positive"),
    ("eval_batch_size", 0, r"^--eval_batch_size=0 must be positive"),
    ("patch_max_size", 0, r"^--patch_max_size=0 must be positive"),
    ("t_inas", 0, r"^--t_inas=0 must be positive"),
    ("lr", 0.0, r"^--lr=0.0 must be positive"),
    ("lr", -0.1, r"^--lr=-0.1 must be positive"),
    ("max_shift", -1, r"^--max_shift and --max_rotation must be >= 0"),
    ("max_rotation", -1.0, r"--max_rotation must be >= 0"),
    ("momentum", 1.0, r"^--momentum=1.0 must be in \[0, 1\)"),
    ("momentum", -0.1, r"^--momentum=-0.1 must be in \[0, 1\)"),
    ("weight_decay", -1e-4, r"--weight_decay=-0.0001 >= 0"),
    ("compute_dtype", "float16", r"^--compute_dtype='float16': choose float32 or bfloat16"),
]


def test_the_defaults_pass():
    validate(RunConfig(), pool_size=1300)


@pytest.mark.parametrize("name,value,message", BAD_VALUES, ids=[f"{n}={v}" for n, v, _ in BAD_VALUES])
def test_each_check_refuses_its_bad_value_naming_the_flag(name, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate(RunConfig().replace(**{name: value}), pool_size=1300)
    assert f"--{name}" in str(err.value)


@pytest.mark.parametrize("args,message", [
    (["--mc_rate=1.5"], "--mc_rate=1.5 must be in (0, 1)"),
    (["--momentum=1"], "--momentum=1.0 must be in [0, 1)"),
    (["--compute_dtype=float16"], "--compute_dtype='float16'"),
    (["--eval_batch_size=0"], "--eval_batch_size=0 must be positive"),
])
def test_the_driver_refuses_a_bad_value_in_one_line(tmp_path, capsys, args, message):
    workdir = tmp_path / "w"
    assert run_cli(TINY + args + [f"--workdir={workdir}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not workdir.exists()


def test_a_compilation_cache_that_cannot_be_created_is_one_error_line(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    workdir = tmp_path / "w"
    assert run_cli(TINY + [f"--compilation_cache={a_file}", f"--workdir={workdir}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --compilation_cache={str(a_file)!r}"), err
    assert not workdir.exists()
    proc = subprocess.run([sys.executable, "-m", "inas_jax.main", *TINY, f"--compilation_cache={a_file / 'sub'}",
                           f"--workdir={workdir}"], capture_output=True, text=True,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=SUBPROCESS_TIMEOUT)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: --compilation_cache="), \
        proc.stderr[-2000:]
    assert not workdir.exists()
