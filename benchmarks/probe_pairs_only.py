"""Probe: a setting's effect on real pairs in two minutes, training the smoke network on the labeled pairs alone.

    .venv/bin/python benchmarks/probe_pairs_only.py --tables runs/rw35_s0/c_photo_pool/tables \\
        devdata/rain100l devdata/rain12 devdata/rain100h devdata/sots_outdoor -- train.crop_size=96

The training worker's pieces (network, AdamW with its schedule, EMA teacher, its batch stream with the profile's
weather repeats, clean pairs and weather dropout, L_sup) run in this process for ``--steps`` steps on the ``train``
split of ``--tables``; then the calibration is fitted as the job's last checkpoint fits it, and each real pair set is
restored told the weather its folder name tells (as in bench_calibration.py; rain where it tells none). It prints
the PSNR gain over the input, network alone and calibrated, per set and pooled by weather. No Ray, no pool, no
pseudo-labels, no validation (``runtime.seed=N`` for another seed): what it ranks is settings, for the full command
(bench_realworld.py) to confirm. A folder of a table's own test pairs (``input/``, ``target/``) works as a set too.
Used for docs/real-weather.md ("Light rain stays near +1 dB").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench_calibration import weather_of
from fairweather.contracts.config import load_config
from fairweather.contracts.tables import TableStore
from fairweather.data.batches import load_rgb
from fairweather.data.views import paired_view
from fairweather.losses.pixel import PixelLoss
from fairweather.metrics.tiled import psnr
from fairweather.models import build_model, restore_tiled_uint8
from fairweather.models.conditioning import condition_tensor
from fairweather.training.calibration_fit import calibrate_on_pairs
from fairweather.training.ema import ema_update
from fairweather.training.loop import batch_stream
from fairweather.training.optim import build_optimizer, build_scheduler, ema_decay_at
from fairweather.training.setup import memory_format
from probe_real_error import MAX_PIXELS, pairs_of


def train_teacher(cfg, rows: list[dict], steps: int) -> torch.nn.Module:
    """The EMA teacher after ``steps`` steps of L_sup on ``rows`` (the ``train`` split's pairs), fed by the
    worker's own batch stream (weather repeats, clean pairs, weather dropout, seeded by ``runtime.seed``)."""
    torch.manual_seed(cfg.runtime.seed)
    layout = memory_format(cfg)  # the worker's
    model = build_model(cfg.model).use_memory_format(layout)
    teacher = build_model(cfg.model, train_crop_size=cfg.train.crop_size).use_memory_format(layout)
    teacher.load_state_dict(model.state_dict())
    teacher.requires_grad_(False)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    pixel = PixelLoss(cfg.loss.pixel, cfg.loss.charbonnier_eps)  # L_sup's pixel loss
    loader = batch_stream(cfg, rows, [], rank=0, world=1, start=0)
    try:
        for step, (batch, _) in zip(range(steps), loader, strict=False):
            out = model(batch["paired_input"], weather=condition_tensor(batch["paired_weather"]))
            loss = pixel(out, batch["paired_target"])
            optimizer.zero_grad()
            loss.backward()
            if cfg.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            scheduler.step()
            ema_update(teacher, model, ema_decay_at(step, cfg.train.ema_decay))
    finally:
        loader.close()
    return teacher.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", required=True, help="a table store with a paired table (its train split)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=12, help="pairs per real set (its first, by name)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("sets", nargs="+", help="real pair folders, then -- and smoke-profile overrides")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, overrides = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    torch.set_num_threads(args.threads)
    print(f"smoke profile, overrides: {' '.join(overrides) or 'none'}")
    cfg = load_config("smoke", [f"train.iterations_per_round={args.steps}", "train.rounds=1", *overrides])
    rows = paired_view(TableStore(args.tables), "train").to_pylist()
    if not rows:
        sys.exit(
            f"probe_pairs_only: no train pairs in {args.tables} (`fairweather synth` or `import-pairs` first)"
        )
    start = time.perf_counter()
    teacher = train_teacher(cfg, rows, args.steps)
    trained = time.perf_counter() - start
    with torch.inference_mode():
        calibration = calibrate_on_pairs(
            teacher, rows, cfg.model, cfg.train.calibration, max_pixels=MAX_PIXELS, device=torch.device("cpu")
        )
        print(
            f"{args.steps} steps in {trained:.0f} s; calibration {time.perf_counter() - start - trained:.0f} s"
        )
        pooled: dict[str, list[list[float]]] = {"rain": [], "haze": [], "snow": []}
        for folder in map(Path, args.sets):
            weather = weather_of(folder.name) or "rain"
            gains = []
            for degraded_path, target_path in pairs_of(folder)[: args.pairs]:
                degraded, target = (
                    load_rgb(str(degraded_path), MAX_PIXELS),
                    load_rgb(str(target_path), MAX_PIXELS),
                )
                raw = restore_tiled_uint8(
                    teacher,
                    degraded,
                    cfg.model.tile,
                    cfg.model.tile_overlap,
                    weather=condition_tensor([weather]),
                )
                base = psnr(degraded, target)
                gains.append(
                    [
                        psnr(raw, target) - base,
                        psnr(calibration.apply(degraded, raw.copy(), weather), target) - base,
                    ]
                )
            pooled[weather] += gains
            alone, calibrated = np.mean(gains, axis=0)
            print(f"  {folder.name:14s} alone {alone:+.2f} calibrated {calibrated:+.2f}", flush=True)
        for weather, gains in pooled.items():
            if gains:
                alone, calibrated = np.mean(gains, axis=0)
                print(f"  all {weather}: alone {alone:+.2f} calibrated {calibrated:+.2f}")


if __name__ == "__main__":
    main()
