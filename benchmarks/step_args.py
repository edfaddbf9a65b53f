"""Command-line knobs shared by the benchmarks that time training steps (batch, size, warm-up, repeats, threads),
and their timer."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any


def fastest_ms(step: Callable[[], Any], warmup: int, steps: int, device: Any = None) -> float:
    """Fastest wall time of ``step`` in milliseconds after ``warmup`` untimed calls: the call least disturbed by other
    processes sharing the CPU (as timeit reports the min). On a CUDA ``device`` its work is synchronised before the
    clock stops."""

    def timed() -> float:
        start = time.perf_counter()
        step()
        if device is not None and device.type == "cuda":
            import torch  # only here: the drivers of these benchmarks need not import torch

            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        timed()
    return 1000 * min(timed() for _ in range(steps))


def add_step_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=4, help="images per step")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (the fastest is reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")


def parse_step_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the shared knobs (positive sizes, non-negative warm-up)."""
    args = parser.parse_args(argv)
    if min(args.batch, args.size, args.steps, args.threads) <= 0 or args.warmup < 0:
        parser.error("--batch, --size, --steps and --threads must be positive, --warmup >= 0")
    return args
