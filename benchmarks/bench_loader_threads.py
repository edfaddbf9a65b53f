"""Why the loader threads convert batches with numpy: the training step's time when another live thread has run a
parallel torch op, against the same thread doing the same conversion in numpy.

    .venv/bin/python benchmarks/bench_loader_threads.py                 # smoke NAFNet, 2 torch threads, 5 repeats
    .venv/bin/python benchmarks/bench_loader_threads.py --threads 1 --repeats 3

Each run is a fresh process (an OpenMP thread team, once made, lives as long as its thread): it times ``--steps``
training steps of the smoke profile's NAFNet (batch 8, 64-px crops, AdamW) with ``torch.set_num_threads(--threads)``,
then starts a thread that converts 20 batches the way a loader thread does and stays alive (as a
``ThreadPoolExecutor`` worker does), and times the same steps again. ``torch``: the conversion as it was
(``torch.from_numpy(...).permute(...).float().div_(255)``, parallel torch ops in the loader thread); ``numpy``:
:func:`fairweather.data.batches.to_tensor` (numpy arithmetic, a ``from_numpy`` view). The arms alternate; the
table gives the median ms/step before and after the thread, per arm, and the ratio after / before.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time


def step_ms(threads: int, steps: int) -> float:
    """Median ms of ``steps`` training steps (after 5 untimed) of a fresh smoke NAFNet."""
    import torch

    from fairweather.contracts.config.root import load_config
    from fairweather.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(load_config("smoke").model, train_crop_size=64)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.rand(8, 3, 64, 64), torch.rand(8, 3, 64, 64)
    times = []
    for index in range(steps + 5):
        start = time.perf_counter()
        loss = (model(x) - y).abs().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if index >= 5:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def convert_in_a_live_thread(arm: str) -> None:
    """20 batch conversions in a thread that then stays alive, like a loader thread."""
    import numpy as np
    import torch

    from fairweather.data.batches import to_tensor

    images = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(8)]
    done, hold = threading.Event(), threading.Event()

    def loader() -> None:
        for _ in range(20):
            if arm == "torch":
                torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
            else:
                to_tensor(images)
        done.set()
        hold.wait()

    threading.Thread(target=loader, daemon=True).start()
    done.wait()


def child(arm: str, threads: int, steps: int) -> None:
    before = step_ms(threads, steps)
    convert_in_a_live_thread(arm)
    after = step_ms(threads, steps)
    print(json.dumps({"arm": arm, "before": before, "after": after}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads of the training step (default 2)"
    )
    parser.add_argument("--steps", type=int, default=40, help="timed steps before and after (default 40)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="fresh processes per arm, alternating (default 5)"
    )
    parser.add_argument("--child", choices=("torch", "numpy"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.threads, args.steps)
        return
    results: dict[str, list[dict]] = {"torch": [], "numpy": []}
    for repeat in range(args.repeats):
        for arm in ("torch", "numpy") if repeat % 2 == 0 else ("numpy", "torch"):
            command = [sys.executable, __file__, "--child", arm, "--threads", str(args.threads)]
            out = subprocess.run(
                [*command, "--steps", str(args.steps)], capture_output=True, text=True, check=True
            )
            results[arm].append(json.loads(out.stdout.strip().splitlines()[-1]))
            row = results[arm][-1]
            print(
                f"  {arm:5s} run {repeat + 1}: {row['before']:.1f} -> {row['after']:.1f} ms/step", flush=True
            )
    print(f"\n{args.threads} torch threads, {args.steps} steps, {args.repeats} runs per arm (medians)\n")
    print("| loader thread converts with | ms/step before the thread | after | after / before |")
    print("|---|---|---|---|")
    for arm, rows in results.items():
        before = statistics.median(r["before"] for r in rows)
        after = statistics.median(r["after"] for r in rows)
        ratio = statistics.median(r["after"] / r["before"] for r in rows)
        print(f"| {arm} | {before:.1f} | {after:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
