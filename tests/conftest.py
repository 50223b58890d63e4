"""Shared fixtures. Tests run on the CPU with tiny widths and few steps."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib

import pytest

from inas_jax.data import load_digits

CIFAR10_NPZ = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10.npz"


@pytest.fixture(scope="session")
def digits():
    return load_digits()
