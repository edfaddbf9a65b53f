"""Which images a rank trains on at a given step: disjoint shards per epoch, no image dropped or duplicated.

Epoch ``e`` is a permutation of the ``n`` images drawn from ``(seed, e)``; rank ``r`` of ``W`` takes the positions
``r, r + W, r + 2W, ...`` of it, so within an epoch the ranks see disjoint sets that together cover every image once
(ranks differ by at most one image per epoch, with no padding or dropping, unlike a DistributedSampler).

Each rank reads its own positions as an endless stream, ``batch_size`` per step, and batches may straddle an epoch
boundary. The stream is a pure function of the step, so a resumed run continues exactly where it stopped, and the
ranks never need to agree on when an epoch ends (an epoch-boundary barrier would deadlock against DDP's all-reduce).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@functools.lru_cache(maxsize=4)  # a batch straddles at most two epochs
def epoch_permutation(n: int, epoch: int, seed: int) -> np.ndarray:
    """The image order of one epoch: a permutation of ``range(n)`` fixed by ``(seed, epoch)`` (read-only)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False
    return order


@dataclass(frozen=True)
class Pick:
    """One image of a batch: its index into the view, the epoch it belongs to (seeds its crop/flip)."""

    index: int
    epoch: int


@dataclass(frozen=True)
class ShardSampler:
    """The deterministic per-rank stream of ``Pick`` batches over a view of ``n`` images."""

    n: int
    rank: int
    world_size: int
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, {self.world_size})")
        if self.n < self.world_size:
            raise ValueError(
                f"{self.n} image(s) cannot be shared by {self.world_size} workers: every rank needs at least one "
                "(add data or lower train.scaling.num_workers)"
            )

    @property
    def per_epoch(self) -> int:
        """Images this rank sees per epoch: ``ceil((n - rank) / world_size)``."""
        return len(range(self.rank, self.n, self.world_size))

    def batch(self, step: int) -> list[Pick]:
        """The ``batch_size`` picks of ``step`` (0-based), continuing across epochs."""
        picks = []
        for position in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, offset = divmod(position, self.per_epoch)
            order = epoch_permutation(self.n, epoch, self.seed)
            picks.append(Pick(int(order[self.rank + offset * self.world_size]), epoch))
        return picks
