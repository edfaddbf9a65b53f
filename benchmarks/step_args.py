"""Command-line knobs shared by the benchmarks that time training steps (batch, size, warm-up, repeats, threads)."""

from __future__ import annotations

import argparse


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
