"""Who answers the queries: an oracle gives the labels of pool points when a round needs them.

`SimulatedOracle` reveals labels the dataset already holds (every benchmark run); `PersonOracle`
(person.py) asks a person through files in the workdir and waits for the answers. The loop reads
labels only through an oracle (`Oracle.labels`), and only for labelled points.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

ORACLES = ("simulated", "person")


class WaitingForLabels(Exception):
    """A round needs labels a person has not given yet; the message says which file to fill. The run
    exits with status 3 and resumes when rerun."""


class LabelError(ValueError):
    """A person's answers cannot be accepted; the message names the row and the value. Nothing changed."""


class Oracle(Protocol):
    def labels(self, round_: int, idx: np.ndarray) -> np.ndarray:
        """Labels (n,) int32 of pool indices idx (n,) for round `round_` (1-based), in the order of idx.
        Raises WaitingForLabels or LabelError."""

    def ask(self, round_: int, idx: np.ndarray, probabilities: np.ndarray | None) -> None:
        """Announces the points idx (b,) queried for round `round_`, with the current network's class
        probabilities (b, K) when it has one."""

    @property
    def wants_guesses(self) -> bool:
        """Whether `ask` uses the network's probabilities (the loop computes them only then)."""


class SimulatedOracle:
    """Reveals the labels y_train (N,) int32 already held: the simulated person of every benchmark."""

    wants_guesses = False

    def __init__(self, y_train: np.ndarray):
        self.y_train = y_train

    def labels(self, round_: int, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.y_train[idx], np.int32)

    def ask(self, round_: int, idx: np.ndarray, probabilities: np.ndarray | None) -> None:
        pass
