"""Training schedule of Paper A (rounds of mean-teacher training with pseudo-label refreshes)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    rounds: int = 4
    iterations_per_round: int = 40_000
    batch_size: int = 8
    crop_size: int = 256
    lr: float = 2e-4
    #: Decay of the EMA (mean-teacher) copy that restores the real pool between rounds.
    ema_decay: float = 0.999
    num_workers: int = 1
    use_gpu: bool = False
