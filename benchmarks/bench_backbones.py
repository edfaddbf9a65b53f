"""Benchmark the restoration backbones on CPU: parameters, training throughput and peak memory.

For each backbone, training steps (forward, L1 loss, backward; no optimiser update) on a batch of random
images are timed one by one and the fastest gives the throughput (robust to other load on a shared CPU), and the results are printed as a Markdown table with ratios relative to MSBDN from the same run.

Memory method: every backbone runs in its own fresh Python subprocess, so one model's allocations cannot hide
another's. The subprocess reads its peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) once after
imports, model construction and input creation ("base") and again after the timed steps ("peak"). ``peak`` is
what the process needed in all; ``peak - base`` is the extra memory of a training step (activations kept for
backward, gradients, workspace). RSS counts whole pages and includes the allocator's cached blocks, so it is an
upper bound of what the tensors themselves need, but it is the same measure for every backbone.

    python benchmarks/bench_backbones.py                  # config default (tiny) sizes, 256x256, batch 4
    python benchmarks/bench_backbones.py --sizes paper    # paper sizes (slow on CPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time

from step_args import add_step_args, parse_step_args

ARCHS = ("msbdn", "restormer", "nafnet", "promptir")


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_worker(arch: str, sizes: str, batch: int, size: int, warmup: int, steps: int, threads: int) -> dict:
    """Measure one backbone in this process; returns the row as a dict."""
    import torch
    import torch.nn.functional as F

    from fairweather.contracts.config import load_config
    from fairweather.contracts.config.model import ModelConfig
    from fairweather.models import build_model, count_parameters

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = dataclasses.replace(load_config("paper").model if sizes == "paper" else ModelConfig(), arch=arch)
    model = build_model(cfg).train()
    x, target = torch.rand(batch, 3, size, size), torch.rand(batch, 3, size, size)
    base = _max_rss_mib()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.l1_loss(model(x), target).backward()

    for _ in range(warmup):
        step()
    # The fastest step is the least disturbed by other processes sharing the CPU (as timeit reports the min).
    fastest = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        step()
        fastest = min(fastest, time.perf_counter() - start)
    return {
        "arch": arch,
        "params": count_parameters(model),
        "images_per_s": batch / fastest,
        "peak_mib": _max_rss_mib(),
        "step_mib": _max_rss_mib() - base,
    }


def measure_in_subprocess(arch: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", arch, "--sizes", args.sizes, "--batch", str(args.batch)]
    cmd += ["--size", str(args.size), "--warmup", str(args.warmup), "--steps", str(args.steps)]
    cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker for {arch} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown_table(rows: list[dict], reference: str = "msbdn") -> str:
    ref = next((r for r in rows if r["arch"] == reference), rows[0])
    lines = [
        f"| backbone | params (M) | params / {ref['arch']} | fwd+bwd img/s | speed / {ref['arch']} "
        f"| peak RSS (MiB) | peak / {ref['arch']} | step RSS delta (MiB) | delta / {ref['arch']} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['params'] / 1e6:.3f} | {r['params'] / ref['params']:.2f} "
            f"| {r['images_per_s']:.2f} | {r['images_per_s'] / ref['images_per_s']:.2f} "
            f"| {r['peak_mib']:.0f} | {r['peak_mib'] / ref['peak_mib']:.2f} "
            f"| {r['step_mib']:.0f} | {r['step_mib'] / ref['step_mib']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", choices=("default", "paper"), default="default", help="config defaults or paper"
    )
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS), help="backbones to run")
    add_step_args(parser)
    parser.add_argument("--worker", choices=ARCHS, help=argparse.SUPPRESS)  # internal: measure one backbone
    return parse_step_args(parser, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        row = run_worker(
            args.worker, args.sizes, args.batch, args.size, args.warmup, args.steps, args.threads
        )
        print(json.dumps(row))
        return
    rows = []
    for arch in args.archs:
        rows.append(measure_in_subprocess(arch, args))
        print(f"measured {arch}", file=sys.stderr)
    print(
        f"Backbones, {args.sizes} sizes, batch {args.batch} x 3 x {args.size} x {args.size}, "
        f"{args.threads} CPU threads, fastest of {args.steps} steps after {args.warmup} warm-up:\n"
    )
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
