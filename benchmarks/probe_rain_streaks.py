"""How rain differs between pair sets, and how much of it a checkpoint takes off: streak pixels against the rest.

    .venv/bin/python benchmarks/probe_rain_streaks.py --checkpoint CKPT --tables runs/rw35_s0/c_photo_pool/tables \\
        devdata/rain100l devdata/rain12 devdata/ddn_sirr_test devdata/rain100h

A pixel is a *streak pixel* where the rainy input is brighter than its target by more than ``--threshold`` grey
levels (mean of the three channels, 0-255). Per set (each folder of real pairs, ``input/`` and ``target/``, and with
``--tables`` the ``train`` split's rain pairs of a table store, the pairs a network was trained on) it prints the
share of streak pixels and how much rain brightens them (medians over the images, with the 10th-90th percentiles of
the brightening), and with ``--checkpoint``, the restoration as ``fairweather evaluate`` scores it (told "rain"):
the squared error on streak pixels and on the rest, input -> output (summed over each part, divided by all the
pixels, so the two add up to the image's MSE), the share of the rain the restoration took off on streak pixels
(its change projected on the rain, input - target) and the PSNR gain. Used for docs/real-weather.md ("What holds
light rain back").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fairweather.contracts.tables import TableStore
from fairweather.data.batches import load_rgb
from fairweather.data.views import paired_view
from fairweather.metrics.tiled import psnr
from fairweather.training.restorer import Restorer, load_restorer
from probe_real_error import MAX_PIXELS, pairs_of


def streak_stats(
    degraded: np.ndarray, target: np.ndarray, restored: np.ndarray | None, threshold: float
) -> dict[str, float]:
    """One pair's figures: uint8 ``(H, W, 3)`` images; ``restored`` None: the rain's figures only."""
    x, t = degraded.astype(np.float32), target.astype(np.float32)
    rain = x - t
    streak = rain.mean(axis=-1) > threshold
    stats = {
        "cover": float(streak.mean()),
        "bright": float(rain.mean(axis=-1)[streak].mean()) if streak.any() else 0.0,
    }
    if restored is None:
        return stats
    out = restored.astype(np.float32)
    pixels = streak.size

    def part_mse(image: np.ndarray, mask: np.ndarray) -> float:
        return float(((image - t) ** 2).mean(axis=-1)[mask].sum() / pixels)

    taken = (x - out)[streak]
    energy = float((rain[streak] ** 2).sum())
    stats |= {
        "in_streak": part_mse(x, streak),
        "in_rest": part_mse(x, ~streak),
        "out_streak": part_mse(out, streak),
        "out_rest": part_mse(out, ~streak),
        "taken": float((taken * rain[streak]).sum()) / energy if energy else 0.0,
        "gain": psnr(restored, target) - psnr(degraded, target),
    }
    return stats


def set_row(name: str, pairs: list[tuple[str, str]], restorer: Restorer | None, threshold: float) -> str:
    figures = []
    for degraded_path, target_path in pairs:
        degraded, target = load_rgb(degraded_path, MAX_PIXELS), load_rgb(target_path, MAX_PIXELS)
        restored = None if restorer is None else restorer.restore(degraded, "rain")
        figures.append(streak_stats(degraded, target, restored, threshold))
    column = {key: np.array([f[key] for f in figures]) for key in figures[0]}
    low, mid, high = np.percentile(column["bright"], [10, 50, 90])
    cells = [
        name,
        str(len(pairs)),
        f"{100 * np.median(column['cover']):.0f} %",
        f"{mid:.0f} ({low:.0f}-{high:.0f})",
    ]
    if restorer is not None:
        mean = {key: float(values.mean()) for key, values in column.items()}
        cells += [
            f"{mean['in_streak']:.0f} / {mean['in_rest']:.0f}",
            f"{mean['out_streak']:.0f} / {mean['out_rest']:.0f}",
            f"{mean['taken']:.2f}",
            f"{mean['gain']:+.2f}",
        ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="folders of real rain pairs (input/, target/)")
    parser.add_argument("--checkpoint", help="a checkpoint to restore every pair with (told 'rain')")
    parser.add_argument("--tables", help="a table store: its train split's rain pairs as one more set")
    parser.add_argument("--pairs", type=int, default=0, help="pairs per set, the first by name (0: all)")
    parser.add_argument("--threshold", type=float, default=8.0, help="grey levels that make a streak pixel")
    args = parser.parse_args()
    torch.set_num_threads(2)
    restorer = None if args.checkpoint is None else load_restorer(args.checkpoint, device="cpu")
    sets = {folder.name: [(str(a), str(b)) for a, b in pairs_of(folder)] for folder in args.folders}
    if args.tables:
        rows = paired_view(TableStore(args.tables), "train").to_pylist()
        sets["training rain"] = [
            (row["input_uri"], row["target_uri"]) for row in rows if row["weather"] == "rain"
        ]
    header = ["set", "pairs", "streak pixels", "brightening (q10-q90)"]
    if restorer is not None:
        header += ["MSE streak / rest, input", "output", "rain taken off", "PSNR gain"]
    print("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    for name, pairs in sets.items():
        chosen = pairs[: args.pairs] if args.pairs else pairs
        if not chosen:
            raise SystemExit(f"probe_rain_streaks: no pairs in {name}")
        print(set_row(name, chosen, restorer, args.threshold), flush=True)


if __name__ == "__main__":
    main()
