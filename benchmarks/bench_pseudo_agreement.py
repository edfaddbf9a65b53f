"""How often does the pseudo-label rule pick, of two candidates, the one closer to the truth?

    .venv/bin/python benchmarks/bench_pseudo_agreement.py devdata/rain100h devdata/sots_outdoor devdata/o_haze \\
        [--checkpoint runs/smoke/train/<run>/checkpoint_000999] [--images 20] [--config smoke]

On real pairs (``<folder>/input`` + ``<folder>/target``, same stems), each image gets candidates whose PSNR against
the target is known: the input itself; partial and full "restorations" (the input moved 30 / 60 / 90 % of the way to
the target, the target lightly blurred); the ruined outputs the issue saw a real model produce (a strong blue cast,
an embossed dot texture, a grid of tile blocks, each on the 60 % restoration); and, with ``--checkpoint``, that
network's restoration. Every candidate is scored with the config's pseudo-label metrics (``pseudo.metrics``, NIQE's
parameters through ``fairweather prefetch``) and the guards against its input; then, for every judge (each metric
alone, each guard alone, the rule without guards, the full rule), the share of candidate pairs (PSNR gap > 0.5 dB)
where the judge's choice agrees with PSNR. Images are resized to a short side of at most 480 px.
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np
import torch
from PIL import Image, ImageFilter

from fairweather.contracts.config import load_config
from fairweather.data.batches import to_tensor
from fairweather.metrics import build_scorer
from fairweather.pseudo import Rule, agreement_table
from fairweather.pseudo.guards import input_checks
from fairweather.training.restorer import load_restorer


def _load(path: str, short: int = 480) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    if min(image.size) > short:
        r = short / min(image.size)
        image = image.resize((round(image.size[0] * r), round(image.size[1] * r)), Image.Resampling.LANCZOS)
    return np.asarray(image)


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return np.clip(a * (1 - t) + b * t, 0, 255).astype(np.uint8)


def _ruined(base: np.ndarray) -> dict[str, np.ndarray]:
    """The three failures seen on real photos: a blue cast, an embossed dot texture, tile blocks."""
    h, w = base.shape[:2]
    blue = np.clip(base.astype(float) * [0.8, 0.9, 1.0] + [0, 8, 40], 0, 255)
    yy, xx = np.mgrid[:h, :w]
    dots = base + 14.0 * (np.sin(xx * 2 * np.pi / 4) * np.sin(yy * 2 * np.pi / 4))[..., None]
    blocks = base + 10.0 * (((yy // 32) + (xx // 32)) % 2 * 2 - 1)[..., None]
    return {
        k: np.clip(v, 0, 255).astype(np.uint8)
        for k, v in (("blue", blue), ("dots", dots), ("blocks", blocks))
    }


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(float) - b.astype(float)) ** 2))
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def candidates(inp: np.ndarray, target: np.ndarray, restorer) -> dict[str, np.ndarray]:
    out = {"input": inp, **{f"toward{int(t * 100)}": _mix(inp, target, t) for t in (0.3, 0.6, 0.9)}}
    out["blurred"] = np.asarray(Image.fromarray(target).filter(ImageFilter.GaussianBlur(1.2)))
    out.update({f"ruined_{k}": v for k, v in _ruined(out["toward60"]).items()})
    if restorer is not None:
        out["checkpoint"] = restorer.restore(inp)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--checkpoint")
    parser.add_argument("--images", type=int, default=20, help="at most this many pairs per folder")
    parser.add_argument("--config", default="smoke")
    parser.add_argument("--min-gap", type=float, default=0.5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config, args.overrides)
    rule = Rule.of(cfg.pseudo)
    scorers = {name: build_scorer(name, cfg.pseudo.scorer, device="cpu") for name in cfg.pseudo.metrics}
    restorer = load_restorer(args.checkpoint, device="cpu") if args.checkpoint else None
    images: dict[str, list[tuple[dict[str, float], float]]] = {}
    for folder in args.folders:
        for path in sorted(glob.glob(f"{folder}/input/*"))[: args.images]:
            stem = os.path.splitext(os.path.basename(path))[0]
            inp, target = _load(path), _load(glob.glob(f"{folder}/target/{stem}.*")[0])
            rows = []
            for name, image in candidates(inp, target, restorer).items():
                values = {m: float(s(to_tensor([image]))[0]) for m, s in scorers.items()}
                if name != "input":
                    values.update(
                        input_checks(image, inp, grid_periods=tuple(cfg.pseudo.guards.grid_periods))
                    )
                rows.append((values, psnr(image, target)))
            images[f"{os.path.basename(folder)}/{stem}"] = rows
    table = agreement_table(images, rule, min_gap=args.min_gap)
    print(f"{len(images)} images, candidate pairs with a PSNR gap > {args.min_gap} dB")
    print("| judge | pairs | agree | disagree | ties | agreement |\n|---|---|---|---|---|---|")
    for name, a in table.items():
        print(f"| {name} | {a.pairs} | {a.agree} | {a.disagree} | {a.ties} | {a.rate:.3f} |")


if __name__ == "__main__":
    main()
