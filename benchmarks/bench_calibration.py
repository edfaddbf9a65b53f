"""The colour calibration's settings compared on one network: refit it on the same training pairs, score real pairs.

    .venv/bin/python benchmarks/bench_calibration.py CHECKPOINT --tables RUN/tables \\
        --variant refit: --variant 'lighter:train.calibration.lighter=[0.5]' \\
        devdata/rain100h devdata/rain100l devdata/rain12 devdata/sots_outdoor devdata/o_haze

The checkpoint's EMA teacher restores every input of each folder of real pairs (``input/`` and ``target/``, files
matched by name, suffix ignored) once, in this process. Each ``--variant NAME:KEY=VALUE;...`` refits the calibration
(:func:`fairweather.training.calibration_fit.calibrate_on_pairs`) on the ``--split`` (default ``train``: the run's own
training pairs) of the ``paired`` table under ``--tables``, with the checkpoint's calibration settings changed by the
overrides, and maps every restoration with it. It prints the mean PSNR gain over the input (dB) per folder, and all
rain and all haze folders (by name) pooled, for: the network alone, the calibration the checkpoint carries, and each
variant. A weather-conditioned network is told each folder's weather by its name (rain, ddn: rain; haze, sots:
haze; snow), or nothing with ``--unknown-weather``. The PSNRs are :mod:`fairweather.metrics.tiled`'s (pyiqa's
definition). Differences between variants are
differences of the calibration alone: the network and its restorations are the same.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from fairweather.contracts.config import FairweatherConfig, to_dict
from fairweather.contracts.config.loader import apply_overrides, build
from fairweather.contracts.tables import TableStore
from fairweather.data.batches import load_rgb
from fairweather.data.views import paired_view
from fairweather.metrics.tiled import psnr
from fairweather.models import restore_tiled_uint8
from fairweather.models.conditioning import condition_tensor
from fairweather.training.calibration import Calibration
from fairweather.training.calibration_fit import calibrate_on_pairs
from fairweather.training.restorer import load_restorer
from probe_real_error import MAX_PIXELS, pairs_of  # the same pairs, read the same way

RAIN_WORDS, HAZE_WORDS = ("rain", "ddn"), ("haze", "sots")


def weather_of(name: str) -> str | None:
    """The weather of a development set by its folder name (rain100l, sots_outdoor, snow100k...), else None."""
    for weather, words in (("rain", RAIN_WORDS), ("haze", HAZE_WORDS), ("snow", ("snow",))):
        if any(word in name for word in words):
            return weather
    return None


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME:KEY=VALUE;KEY=VALUE`` -> (name, overrides); ``NAME:`` refits with the checkpoint's settings."""
    name, _, overrides = text.partition(":")
    return name, [item for item in overrides.split(";") if item]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint")
    parser.add_argument("folders", nargs="+", type=Path, help="folders of real pairs (input/, target/)")
    parser.add_argument(
        "--tables", type=Path, required=True, help="the run's table root (its training pairs)"
    )
    parser.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE;... (repeatable)")
    parser.add_argument("--split", default="train", help="the paired split the variants are fitted on")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--unknown-weather",
        action="store_true",
        help="tell a weather-conditioned network nothing (unknown) instead of each set's weather",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    restorer = load_restorer(args.checkpoint, device="cpu")
    cfg, rows = restorer.cfg, paired_view(TableStore(str(args.tables)), args.split).to_pylist()
    calibrations: dict[str, Calibration | None] = {"network alone": None, "as stored": restorer.calibration}
    with torch.inference_mode():
        for name, overrides in map(parse_variant, args.variant):
            start = time.perf_counter()
            changed = build(FairweatherConfig, apply_overrides(to_dict(cfg), overrides))
            calibrations[name] = calibrate_on_pairs(
                restorer.model,
                rows,
                cfg.model,
                changed.train.calibration,
                max_pixels=MAX_PIXELS,
                device=restorer.device,
            )
            print(f"variant {name} {overrides}: fitted in {time.perf_counter() - start:.1f} s", flush=True)

        gains: dict[str, dict[str, list[float]]] = {}
        for folder in args.folders:
            pairs = pairs_of(folder)
            # What a weather-conditioned network is told: the set's weather, as import-pairs --weather records it.
            weather = None if args.unknown_weather else weather_of(folder.name)
            condition = condition_tensor([weather])
            for input_path, target_path in pairs:
                degraded, target = (
                    load_rgb(str(input_path), MAX_PIXELS),
                    load_rgb(str(target_path), MAX_PIXELS),
                )
                raw = restore_tiled_uint8(
                    restorer.model, degraded, cfg.model.tile, cfg.model.tile_overlap, weather=condition
                )
                base = psnr(degraded, target)
                for name, calibration in calibrations.items():
                    out = raw if calibration is None else calibration.apply(degraded, raw.copy(), weather)
                    gains.setdefault(name, {}).setdefault(folder.name, []).append(psnr(out, target) - base)
            print(f"{folder.name}: {len(pairs)} pairs", flush=True)

    groups = {folder.name: [folder.name] for folder in args.folders}
    names = [folder.name for folder in args.folders]
    groups["all rain"] = [n for n in names if any(word in n for word in RAIN_WORDS)]
    groups["all haze"] = [n for n in names if any(word in n for word in HAZE_WORDS)]
    header = "| set | " + " | ".join(calibrations) + " |"
    print("\n" + header + "\n|" + "---|" * (len(calibrations) + 1))
    for group, members in groups.items():
        if not members:
            continue
        cells = [np.mean([g for m in members for g in gains[name][m]]) for name in calibrations]
        print(f"| {group} | " + " | ".join(f"{c:+.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
