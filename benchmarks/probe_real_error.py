"""Where a trained network's error on real pairs is: global tone or local detail, and whether inference settings move it.

    .venv/bin/python benchmarks/probe_real_error.py CHECKPOINT devdata/rain100h devdata/rain100l \\
        devdata/ddn_sirr_test devdata/sots_outdoor devdata/o_haze

For each folder of real pairs (``input/`` and ``target/``, files matched by name, suffix ignored) it restores every
input with the checkpoint's EMA teacher (its stored config, tiled, in this process) and prints, per folder, the
mean PSNR gain over the input (dB) of:

- ``as trained``: the network's restoration, without the checkpoint's colour calibration;
- ``+ calibration``: the restoration as ``fairweather evaluate`` scores it, with the colour calibration the
  checkpoint carries (:mod:`fairweather.training.calibration`; a checkpoint without one: the same as ``as trained``);
- ``target's mean colour``: the restoration shifted per channel so its mean equals the target's (an oracle: how much
  of the error is one global offset, the veil or tone left on the photo);
- ``no TLC``: ``model.tlc=false`` (NAFNet's channel attention over the whole tile instead of local windows);
- ``flip average``: the mean of the restorations of the image and of its mirror image (self-ensemble);
- ``DCP``: He et al.'s dark channel prior dehazing alone (15-px patches, airlight from the brightest 0.1 % of the
  dark channel, omega 0.95, t >= 0.1, no refinement): a physical estimate of the veil that needs no training;
- ``+ DCP's mean colour``: the restoration shifted per channel so its mean equals the DCP image's (tone from the
  physical prior, detail from the network; no target involved);
- ``+ regressed mean colour`` (with ``--fit-pairs DIR``, a folder of synthetic pairs such as the smoke profile's
  ``runs/smoke/data/paired``): the restoration shifted to the mean colour that a linear regression from the input's
  global statistics (mean colour, dark-channel quantiles, contrast, saturation) predicts, fitted on those synthetic
  pairs only (can an image-level estimate learnt from synthetic weather find a real photo's tone?);
- ``+ regressed correction`` (with ``--fit-pairs``): the restoration shifted by a per-channel offset that a linear
  regression predicts from the global statistics of the input and of the network's output (and the mean change
  between them), fitted on the synthetic pairs restored by the same network and on their clean targets as
  (clean, clean) pairs, as training mixes them in: the network's remaining tone error, learnt on synthetic weather;
- ``coarse pass``: the image downscaled to the training images' size (``--coarse``, short side in pixels), restored,
  and the correction upsampled onto the full-size input (is the network's veil estimate scale-bound?);

and the mean brightness of input minus target and of output minus target, in grey levels (0-255). The PSNRs are
:mod:`fairweather.metrics.tiled`'s (pyiqa's definition). A diagnostic for the real-weather work
(docs/real-weather.md), not part of the ablation.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import minimum_filter

from fairweather.contracts.errors import FairweatherError
from fairweather.data.batches import load_rgb
from fairweather.imaging import limit_short_side
from fairweather.metrics.tiled import psnr
from fairweather.training.calibration import image_statistics
from fairweather.training.restorer import Restorer, load_restorer

MAX_PIXELS = 10**9


def pairs_of(folder: Path) -> list[tuple[Path, Path]]:
    targets = {path.stem: path for path in (folder / "target").iterdir()}
    return [
        (path, targets[path.stem]) for path in sorted((folder / "input").iterdir()) if path.stem in targets
    ]


def upsample(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``(h, w, 3)`` float32 -> ``shape[:2]``, bilinear."""
    tensor = torch.from_numpy(values).permute(2, 0, 1)[None]
    return (
        F.interpolate(tensor, size=shape[:2], mode="bilinear", align_corners=False)[0]
        .permute(1, 2, 0)
        .numpy()
    )


def dark_channel_dehaze(
    rgb: np.ndarray, patch: int = 15, omega: float = 0.95, t_min: float = 0.1
) -> np.ndarray:
    """He et al. 2009 without the soft-matting refinement: ``(H, W, 3)`` uint8 -> float32 in grey levels."""
    image = rgb.astype(np.float32) / 255.0
    dark = minimum_filter(image.min(axis=2), size=patch)
    brightest = np.argsort(dark, axis=None)[-max(1, dark.size // 1000) :]
    airlight = image.reshape(-1, 3)[brightest].mean(axis=0).clip(1e-3, 1.0)  # (3,)
    transmission = 1.0 - omega * minimum_filter((image / airlight).min(axis=2), size=patch)
    restored = (image - airlight) / np.maximum(transmission, t_min)[..., None] + airlight
    return restored.clip(0, 1) * 255.0


def global_features(rgb: np.ndarray) -> np.ndarray:
    """``(10,)`` image-level statistics of an ``(H, W, 3)`` uint8 image (the calibration's, at full size), the last
    one a constant 1 (the bias)."""
    return np.append(image_statistics(rgb), 1.0)


def mean_colour(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32).mean(axis=(0, 1))


def correction_features(rgb: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """``(22,)``: the input's and the restoration's global features and the mean change between them (/ 255)."""
    change = (mean_colour(restored) - mean_colour(rgb)) / 255.0
    return np.concatenate([global_features(rgb)[:-1], global_features(restored)[:-1], change, [1.0]])


def fit_tone(folder: Path, restorer: Restorer) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares weights on the synthetic pairs in ``folder``: ``(10, 3)`` global features of an input -> its
    target's mean colour minus its own; ``(22, 3)`` correction features -> the target's mean colour minus the
    restoration's, with each target also as a (clean, clean) pair (ridge, so the 22 features stay stable)."""
    features, shifts, corrections, residuals = [], [], [], []
    for input_path, target_path in pairs_of(folder):
        x, y = load_rgb(str(input_path), MAX_PIXELS), load_rgb(str(target_path), MAX_PIXELS)
        features.append(global_features(x))
        shifts.append(mean_colour(y) - mean_colour(x))
        for degraded in (x, y):
            restored = restorer.restore(degraded)
            corrections.append(correction_features(degraded, restored))
            residuals.append(mean_colour(y) - mean_colour(restored))
    weights, *_ = np.linalg.lstsq(np.array(features), np.array(shifts), rcond=None)
    a, b = np.array(corrections), np.array(residuals)
    penalty = 1e-2 * len(a) * np.diag([1.0] * (a.shape[1] - 1) + [0.0])  # the bias is not shrunk
    return weights, np.linalg.solve(a.T @ a + penalty, a.T @ b)


def to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(values, 0, 255).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint")
    parser.add_argument("folders", nargs="+", type=Path, help="folders of real pairs (input/, target/)")
    parser.add_argument(
        "--fit-pairs", type=Path, help="synthetic pairs (input/, target/) for the tone regression"
    )
    parser.add_argument("--coarse", type=int, default=96, help="short side of the coarse pass (default 96)")
    parser.add_argument(
        "--limit", type=int, help="at most this many pairs of each folder (the first by name)"
    )
    args = parser.parse_args()
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1 (got {args.limit})")
    for folder in [*args.folders, *([args.fit_pairs] if args.fit_pairs else [])]:
        if not ((folder / "input").is_dir() and (folder / "target").is_dir()):
            parser.error(f"{folder} has no input/ and target/ folders of pairs")
    torch.set_num_threads(2)
    try:
        calibrated = load_restorer(args.checkpoint, device="cpu")
        no_tlc = load_restorer(args.checkpoint, overrides=["model.tlc=false"], device="cpu")
    except FairweatherError as err:
        parser.error(str(err))
    # Every column but "+ calibration" is about the network alone.
    restorer = dataclasses.replace(calibrated, calibration=None)
    no_tlc.calibration = None
    columns = ["as trained", "+ calibration", "target's mean colour", "no TLC", "flip average", "DCP"]
    columns += ["+ DCP's mean colour"]
    columns += ["+ regressed mean colour", "+ regressed correction"] * bool(args.fit_pairs) + ["coarse pass"]
    tone = fit_tone(args.fit_pairs, restorer) if args.fit_pairs else None
    print("| set | pairs | input - target | output - target | " + " | ".join(columns) + " |")
    print("|---" * (4 + len(columns)) + "|")
    start = time.perf_counter()
    for folder in args.folders:
        gains: dict[str, list[float]] = {name: [] for name in columns}
        bias_in, bias_out = [], []
        for input_path, target_path in pairs_of(folder)[: args.limit]:
            x, y = load_rgb(str(input_path), MAX_PIXELS), load_rgb(str(target_path), MAX_PIXELS)
            if x.shape != y.shape:
                continue
            base = psnr(x, y)
            xf, yf = x.astype(np.float32), y.astype(np.float32)
            out = restorer.restore(x)
            of = out.astype(np.float32)
            mirrored = restorer.restore(np.ascontiguousarray(x[:, ::-1]))[:, ::-1].astype(np.float32)
            small = limit_short_side(x, args.coarse)
            coarse = xf + upsample(
                restorer.restore(small).astype(np.float32) - small.astype(np.float32), x.shape
            )
            dcp = dark_channel_dehaze(x)
            variants = {
                "as trained": out,
                "+ calibration": calibrated.restore(x),
                "target's mean colour": to_uint8(of - (of - yf).mean(axis=(0, 1))),
                "no TLC": no_tlc.restore(x),
                "flip average": to_uint8((of + mirrored) / 2),
                "DCP": to_uint8(dcp),
                "+ DCP's mean colour": to_uint8(of - (of - dcp).mean(axis=(0, 1))),
                "coarse pass": to_uint8(coarse),
            }
            if tone is not None:
                wanted = mean_colour(x) + global_features(x) @ tone[0]
                variants["+ regressed mean colour"] = to_uint8(of - mean_colour(out) + wanted)
                variants["+ regressed correction"] = to_uint8(of + correction_features(x, out) @ tone[1])
            for name, image in variants.items():
                gains[name].append(psnr(image, y) - base)
            bias_in.append(float((xf - yf).mean()))
            bias_out.append(float((of - yf).mean()))
        cells = " | ".join(f"{np.mean(gains[name]):+.2f}" for name in columns)
        print(
            f"| {folder.name} | {len(bias_in)} | {np.mean(bias_in):+.1f} | {np.mean(bias_out):+.1f} | {cells} |"
        )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
