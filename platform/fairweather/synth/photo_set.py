"""Paired data (and an unlabeled pool) from real clean photos: crops degraded by :mod:`fairweather.synth.photo`.

Rules, all deterministic for ``synth.seed`` and independent of the order the sources are listed in:

* **Photos, not pairs, are split.** A photo's pairs all share its split, so no clean target of the test split is
  ever trained on. The usable photos are ordered by the sha256 of their bytes; the first
  ``max(1, round(N·test_fraction))`` are ``test``, the next ``max(1, round(N·val_fraction))`` are ``val``, the rest
  ``train`` (a split that receives no pair gets no photo). Adding photos can move a photo to another split: the
  rows are rewritten then.
* **Pairs.** Pair ``i`` has weather ``weathers[i % len(weathers)]`` and the split of
  :func:`fairweather.synth.paired.split_for` for its index within its weather, as generated scenes do; the j-th
  pair of a (split, weather) takes that split's j-th photo (cycling), so every photo sees every weather.
* **Crop.** From ``numpy.random.default_rng([seed, stream, i])``: a working short side in ``synth.photo.short_side``
  (never above the photo's own), a ``synth.size`` crop at a random position, then the degradation's parameters.
  Depth is estimated once per photo (the model's or the prior, :mod:`fairweather.synth.depth`) and resized with it.
* **Too few photos** for the splits that receive pairs: one :class:`CleanPhotoShortage` before any file is written.

Every pair's record carries ``clean_source`` (the photo as listed), ``degradation`` (sorted JSON: the weather, the
model version, every drawn parameter, the crop, the photo's original mode when it was converted) and
``depth_source``; the pool manifest carries the same.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from fairweather.contracts.config.synth import SynthConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import filesystem_for, write_if_changed

from .clean import CleanPhoto, CleanPhotoError, CleanSource, load_clean_photos
from .depth import DepthFn, photo_depth
from .paired import PHOTO_DATASET, SPLITS, PairRecord, sequence_fraction, split_for
from .photo import synthesize


class CleanPhotoShortage(FairweatherError, ValueError):
    """The clean-photo source has too few usable photos for the requested splits."""


@dataclass(frozen=True)
class PhotoSet:
    """What :func:`generate_photo_pairs` made: pair records, pool manifest rows, the refused sources."""

    pairs: tuple[PairRecord, ...]
    pool_rows: tuple[dict[str, Any], ...]
    errors: tuple[CleanPhotoError, ...]
    #: Photos per split (train / val / test) and the depth sources used (normally one).
    photo_splits: dict[str, int]
    depth_sources: tuple[str, ...]
    files_written: int


def pair_splits(cfg: SynthConfig) -> list[str]:
    """The split of each of the ``num_paired`` pairs, by the generated-pair rule."""
    per_weather = len(cfg.weathers)
    return [
        split_for(sequence_fraction(i // per_weather), cfg.val_fraction, cfg.test_fraction)
        for i in range(cfg.num_paired)
    ]


def assign_photo_splits(
    photos: Sequence[CleanPhoto], needed: set[str], cfg: SynthConfig, errors: Sequence[CleanPhotoError] = ()
) -> dict[str, list[CleanPhoto]]:
    """Photos per split (module docstring); raises :class:`CleanPhotoShortage` when there are too few."""
    n = len(photos)
    wanted = {
        "test": max(1, round(n * cfg.test_fraction)) if "test" in needed else 0,
        "val": max(1, round(n * cfg.val_fraction)) if "val" in needed else 0,
    }
    min_train = 1 if "train" in needed else 0
    while wanted["test"] + wanted["val"] + min_train > n and max(wanted.values()) > 1:
        larger = max(wanted, key=lambda s: wanted[s])
        wanted[larger] -= 1
    if wanted["test"] + wanted["val"] + min_train > n or (n == 0 and needed):
        refused = Counter(e.reason for e in errors)
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(refused.items())) or "none"
        raise CleanPhotoShortage(
            f"the clean-photo source has {n} usable photo(s) (refused: {reasons}); the requested pairs need at "
            f"least {len(needed)} (one per split that receives pairs: {', '.join(s for s in SPLITS if s in needed)}; "
            f"a photo is never shared between splits). Add photos, or lower synth.num_paired / the val and test "
            f"fractions."
        )
    test, val = wanted["test"], wanted["val"]
    return {
        "test": list(photos[:test]),
        "val": list(photos[test : test + val]),
        "train": list(photos[test + val :]),
    }


def _resize(array: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """``array`` ((H, W, 3) uint8 or (H, W) float32) resized to ``size = (h, w)``."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    return np.asarray(Image.fromarray(array).resize((w, h), resample))


def crop_photo(
    photo: CleanPhoto, depth: np.ndarray, cfg: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A random ``synth.size`` crop at a random working resolution: ``(clean float32 [0, 1], depth, crop info)``."""
    crop_h, crop_w = cfg.size
    height, width = photo.image.shape[:2]
    short = min(height, width)
    target = int(rng.integers(cfg.photo.short_side[0], cfg.photo.short_side[1] + 1))
    scale = min(1.0, target / short)
    # Never below the crop, never above the stored photo.
    scale = max(scale, crop_h / height, crop_w / width)
    size = (max(crop_h, round(height * scale)), max(crop_w, round(width * scale)))
    image = _resize(photo.image, size, Image.Resampling.BICUBIC)
    depth = _resize(depth, size, Image.Resampling.BILINEAR)
    top = int(rng.integers(0, size[0] - crop_h + 1))
    left = int(rng.integers(0, size[1] - crop_w + 1))
    window = (slice(top, top + crop_h), slice(left, left + crop_w))
    info = {"resized_to": [size[0], size[1]], "top": top, "left": left, "height": crop_h, "width": crop_w}
    return image[window].astype(np.float32) / 255.0, np.ascontiguousarray(depth[window]), info


def generate_photo_pairs(
    cfg: SynthConfig,
    sources: Sequence[CleanSource],
    *,
    paired_dir: str,
    pool_dir: str,
    encode: Any,
    max_pixels: int,
    depth_fn: DepthFn | None = None,
    depth_name: str = "depth-model",
    paired_stream: int = 0,
    pool_stream: int = 1,
) -> PhotoSet:
    """Write the pairs and pool images made from ``sources`` (module docstring); ``encode``: image -> PNG bytes."""
    photos, errors = load_clean_photos(
        sources, min_size=cfg.size, max_short_side=cfg.photo.short_side[1], max_pixels=max_pixels
    )
    splits = pair_splits(cfg)
    needed = set(splits) | ({"train"} if cfg.num_unlabeled and not splits else set())
    by_split = assign_photo_splits(photos, needed, cfg, errors)
    pool_photos = by_split["train"] or list(photos)
    depths: dict[str, tuple[np.ndarray, str]] = {}

    def depth_of(photo: CleanPhoto) -> tuple[np.ndarray, str]:
        if photo.sha256 not in depths:
            p = cfg.photo
            depths[photo.sha256] = photo_depth(
                photo.image.astype(np.float32) / 255.0,
                near_m=p.near_m,
                camera_height_m=p.camera_height_m,
                far_m=p.far_m,
                depth_cue=p.depth_cue,
                depth_fn=depth_fn,
                depth_name=depth_name,
            )
        return depths[photo.sha256]

    def make(
        photo: CleanPhoto, weather: str, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, str, str]:
        depth, depth_source = depth_of(photo)
        clean, depth_crop, crop = crop_photo(photo, depth, cfg, rng)
        degraded, params = synthesize(clean, depth_crop, weather, cfg.photo, rng)
        record = {**params, "crop": crop, "seed": cfg.seed}
        if photo.converted_from:
            record["converted_from"] = photo.converted_from
        return degraded, clean, json.dumps(record, sort_keys=True), depth_source

    written = 0
    pairs: list[PairRecord] = []
    pool_rows: list[dict[str, Any]] = []
    counters: Counter[tuple[str, str]] = Counter()
    height, width = cfg.size
    jobs = [(paired_stream, i) for i in range(cfg.num_paired)] + [
        (pool_stream, i) for i in range(cfg.num_unlabeled)
    ]
    for stream, index in tqdm(jobs, desc="synth (photos)", unit="img", disable=None):
        rng = np.random.default_rng([cfg.seed, stream, index])
        weather = cfg.weathers[index % len(cfg.weathers)]
        name = f"photo_{weather}_{index:05d}"
        if stream == paired_stream:
            split = splits[index]
            group = by_split[split]
            photo = group[counters[split, weather] % len(group)]
            counters[split, weather] += 1
            degraded, clean, degradation, depth_source = make(photo, weather, rng)
            input_uri, target_uri = f"{paired_dir}/input/{name}.png", f"{paired_dir}/target/{name}.png"
            written += write_if_changed(input_uri, encode(degraded))
            written += write_if_changed(target_uri, encode(clean))
            pairs.append(
                PairRecord(
                    f"{PHOTO_DATASET}/{weather}_{index:05d}",
                    PHOTO_DATASET,
                    split,
                    weather,
                    input_uri,
                    target_uri,
                    width,
                    height,
                    clean_source=photo.source,
                    degradation=degradation,
                    depth_source=depth_source,
                )
            )
        else:
            photo = pool_photos[index % len(pool_photos)]
            degraded, _, degradation, depth_source = make(photo, weather, rng)
            uri = f"{pool_dir}/{weather}/{name}.png"
            written += write_if_changed(uri, encode(degraded))
            pool_rows.append({"name": name, "weather": weather, "seed": cfg.seed, "index": index,
                              "source": photo.source, "params": degradation, "depth_source": depth_source,
                              "uri": uri})  # fmt: skip
    fs, path = filesystem_for(pool_dir)
    fs.create_dir(path, recursive=True)
    return PhotoSet(
        pairs=tuple(pairs),
        pool_rows=tuple(pool_rows),
        errors=tuple(errors),
        photo_splits={split: len(by_split[split]) for split in SPLITS},
        depth_sources=tuple(sorted({source for _, source in depths.values()})),
        files_written=written,
    )
