"""Benchmark the restoration backbones on CPU: parameters, training and restoring throughput, peak memory, in the
contiguous (NCHW) layout and in channels-last (``train.channels_last``, :meth:`RestorationNet.use_memory_format`).

For each backbone and layout, training steps (forward, L1 loss, backward; no optimiser update) on a batch of random
images, then restoring forwards (eval mode, no gradients) of one ``--restore-size`` image (a tile), are timed one
by one and the fastest gives the throughput (robust to other load on a shared CPU). The results are printed as a Markdown table with, for each
backbone, channels-last's speed over the contiguous layout's from the same run; the two layouts of a backbone run
one after the other, in an order that alternates from backbone to backbone.

Memory method: every backbone runs in its own fresh Python subprocess, so one model's allocations cannot hide
another's. The subprocess reads its peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) once after
imports, model construction and input creation ("base") and again after the timed steps ("peak"). ``peak`` is
what the process needed in all; ``peak - base`` is the extra memory of a training step (activations kept for
backward, gradients, workspace). RSS counts whole pages and includes the allocator's cached blocks, so it is an
upper bound of what the tensors themselves need, but it is the same measure for every backbone.

    python benchmarks/bench_backbones.py                  # config default (tiny) sizes, 256x256, batch 4
    python benchmarks/bench_backbones.py --sizes smoke --batch 10 --size 64 --steps 20   # the smoke step's size
    python benchmarks/bench_backbones.py --sizes paper    # paper sizes (slow on CPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys

from step_args import add_step_args, fastest_ms, parse_step_args

ARCHS = ("msbdn", "restormer", "nafnet", "promptir")
LAYOUTS = ("contiguous", "channels_last")


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_worker(args: argparse.Namespace) -> dict:
    """Measure ``args.worker`` in ``args.layout`` in this process; returns the row as a dict."""
    import torch
    import torch.nn.functional as F

    from fairweather.contracts.config import load_config
    from fairweather.contracts.config.model import ModelConfig
    from fairweather.models import build_model, count_parameters

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base_cfg = load_config(args.sizes).model if args.sizes != "default" else ModelConfig()
    fmt = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    model = build_model(dataclasses.replace(base_cfg, arch=args.worker)).use_memory_format(fmt).train()
    # Contiguous inputs, as the loader and the tiler hand them over: the network converts them itself.
    shape = (args.batch, 3, args.size, args.size)
    x, target = torch.rand(shape), torch.rand(shape)
    tile = torch.rand(1, 3, args.restore_size, args.restore_size)
    base = _max_rss_mib()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.l1_loss(model(x), target).backward()

    train_s = fastest_ms(step, args.warmup, args.steps) / 1000
    step_mib = _max_rss_mib() - base
    model.eval()
    with torch.inference_mode():
        restore_s = fastest_ms(lambda: model(tile), args.warmup, args.steps) / 1000
    return {
        "arch": args.worker,
        "layout": args.layout,
        "params": count_parameters(model),
        "images_per_s": args.batch / train_s,
        "restore_images_per_s": 1 / restore_s,
        "peak_mib": _max_rss_mib(),
        "step_mib": step_mib,
    }


def measure_in_subprocess(arch: str, layout: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", arch, "--layout", layout, "--sizes", args.sizes]
    for name in ("batch", "size", "restore_size", "warmup", "steps", "threads"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker for {arch} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown_table(rows: list[dict]) -> str:
    """One line per backbone and layout; a channels-last line also gives its speed over the contiguous one's."""
    lines = [
        "| backbone | params (M) | layout | fwd+bwd img/s | restore img/s | peak RSS (MiB) | step RSS delta (MiB) "
        "| train speed / contiguous | restore speed / contiguous |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    plain = {r["arch"]: r for r in rows if r["layout"] == "contiguous"}
    for r in sorted(rows, key=lambda r: (ARCHS.index(r["arch"]), LAYOUTS.index(r["layout"]))):
        ref = plain.get(r["arch"]) if r["layout"] != "contiguous" else None
        train = f"{r['images_per_s'] / ref['images_per_s']:.2f}x" if ref else ""
        restore = f"{r['restore_images_per_s'] / ref['restore_images_per_s']:.2f}x" if ref else ""
        lines.append(
            f"| {r['arch']} | {r['params'] / 1e6:.3f} | {r['layout']} | {r['images_per_s']:.2f} "
            f"| {r['restore_images_per_s']:.2f} | {r['peak_mib']:.0f} | {r['step_mib']:.0f} | {train} | {restore} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        choices=("default", "smoke", "paper"),
        default="default",
        help="the config's defaults, or a profile's model (smoke: NAFNet told the weather)",
    )
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS), help="backbones to run")
    add_step_args(parser)
    parser.add_argument(
        "--restore-size", type=int, default=256, help="side of the restored tile (default 256)"
    )
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS), help="memory layouts")
    parser.add_argument("--worker", choices=ARCHS, help=argparse.SUPPRESS)  # internal: measure one backbone
    parser.add_argument("--layout", choices=LAYOUTS, default="contiguous", help=argparse.SUPPRESS)
    return parse_step_args(parser, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        row = run_worker(args)
        print(json.dumps(row))
        return
    rows = []
    for index, arch in enumerate(args.archs):
        # A slow drift of the machine then favours neither layout.
        for layout in args.layouts if index % 2 == 0 else args.layouts[::-1]:
            rows.append(measure_in_subprocess(arch, layout, args))
            print(f"measured {arch} ({layout})", file=sys.stderr)
    print(
        f"Backbones, {args.sizes} sizes, batch {args.batch} x 3 x {args.size} x {args.size}, "
        f"{args.threads} CPU threads, fastest of {args.steps} steps after {args.warmup} warm-up "
        f"(restore: one {args.restore_size}-px tile):\n"
    )
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
