"""The A(blocks, stacks) search space of active-iNAS: grid points, the iNAS neighbour rule, sizes.

A(i, j) has j stacks of i basic blocks each. Stack s (1-based) has width `width * 2**(s-1)`; its
first block has stride 2 when s >= 2, with a 1x1 stride-2 conv + BN projection shortcut. The head
is global average pool -> dropout (embedding only) -> dense. Pure Python: no JAX here.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

MAX_BLOCKS = 12
MAX_STACKS = 5


@dataclasses.dataclass(frozen=True, order=True)
class Arch:
    """One point A(blocks, stacks) of the search grid; blocks in 1..12, stacks in 1..5."""

    blocks: int
    stacks: int

    def __post_init__(self):
        if not (1 <= self.blocks <= MAX_BLOCKS and 1 <= self.stacks <= MAX_STACKS):
            raise ValueError(
                f"Arch({self.blocks}, {self.stacks}) is outside the grid: blocks must be in "
                f"1..{MAX_BLOCKS} and stacks in 1..{MAX_STACKS}")

    def __str__(self) -> str:
        return f"A({self.blocks},{self.stacks})"

    @property
    def slug(self) -> str:
        """File-name-safe form, e.g. "2x4"."""
        return f"{self.blocks}x{self.stacks}"

    def to_json(self) -> list[int]:
        """[blocks, stacks]: the form stored in config.json, results.json and checkpoints."""
        return [self.blocks, self.stacks]

    @classmethod
    def from_json(cls, value: Sequence[int]) -> "Arch":
        """Inverse of to_json; raises ValueError for anything but two integers on the grid."""
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise ValueError(f"not an architecture [blocks, stacks]: {value!r}")
        return cls(*value)

    @classmethod
    def parse(cls, text: str) -> "Arch":
        """Parses "2,4" (or "2x4", "A(2,4)") into Arch(2, 4); raises ValueError naming the text."""
        cleaned = text.strip().removeprefix("A(").removesuffix(")").replace("x", ",")
        parts = [p for p in cleaned.split(",") if p.strip()]
        try:
            blocks, stacks = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"cannot parse architecture {text!r}: expected BLOCKS,STACKS such as 2,4") from None
        return cls(blocks, stacks)


def neighbours(arch: Arch) -> list[Arch]:
    """The iNAS candidates of `arch`: itself, one more block per stack, one more stack.

    Deeper: A(i+1, j) if i < 12. Wider: A(floor(i*j/(j+1)) + 1, j+1) if j < 5, which keeps
    the total number of blocks roughly constant while adding a stack. The current
    architecture comes first, so ties in score keep it (the search stops there).
    """
    out = [arch]
    if arch.blocks < MAX_BLOCKS:
        out.append(Arch(arch.blocks + 1, arch.stacks))
    if arch.stacks < MAX_STACKS:
        out.append(Arch(arch.blocks * arch.stacks // (arch.stacks + 1) + 1, arch.stacks + 1))
    return out


def num_params(arch: Arch, num_classes: int, width: int = 64, in_channels: int = 3) -> int:
    """Trainable parameters of A(arch) in closed form: conv kernels+biases, BN scale+offset, dense."""
    def conv(cin, cout, k):
        return k * k * cin * cout + cout

    def bn(c):
        return 2 * c

    total = conv(in_channels, width, 3) + bn(width)
    cin = width
    for s in range(arch.stacks):
        cout = width * 2 ** s
        for b in range(arch.blocks):
            total += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
            if s > 0 and b == 0:
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    return total + cin * num_classes + num_classes
