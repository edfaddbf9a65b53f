"""Turn a rank's picks into training tensors: read, decode, crop and flip with a seed per (run, epoch, image).

A thread pool prepares batches ``prefetch`` steps ahead of the training step (decoding releases the GIL in PIL and
numpy), and :class:`BatchPrefetcher` reports how long the step waited for data, the data-wait fraction that says
whether the loader keeps up.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from fairweather.contracts.io import read_bytes
from fairweather.imaging import decode_image

from .sampling import Pick, ShardSampler

#: Domain ids in the crop/flip seed, so a real image and a pair with equal indices never share a crop.
PAIRED_DOMAIN, REAL_DOMAIN = 0, 1


def load_rgb(uri: str, max_pixels: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of the image at ``uri``."""
    return decode_image(read_bytes(uri), max_pixels=max_pixels)


def crop_flip(images: Sequence[np.ndarray], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One random ``size`` x ``size`` window and horizontal flip, the same for every image of ``images``.

    images: ``(H, W, 3)`` arrays of one scene (input, target, pseudo-label), equal sizes. Sides shorter than ``size``
    are reflect-padded first. Only horizontal flips: rain falls down and the sky is on top, so a vertical flip would
    show the network weather that does not exist.
    """
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"images of one sample must have one size, got {sorted(shapes)}")
    h, w = images[0].shape[:2]
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "edge"
        images = [np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode) for image in images]
        h, w = images[0].shape[:2]
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    flip = bool(rng.integers(0, 2))
    out = []
    for image in images:
        window = image[top : top + size, left : left + size]
        out.append(np.ascontiguousarray(window[:, ::-1] if flip else window))
    return out


def dropped_weather(weather: str, dropout: float, rng: np.random.Generator) -> str:
    """``weather``, or ``unknown`` with probability ``dropout`` (drawn from ``rng`` only when ``dropout`` > 0, so
    that 0 leaves a sample's other draws as they were)."""
    return "unknown" if dropout and rng.random() < dropout else weather


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """``N`` x ``(H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32 in [0, 1] (a channels-last view of an
    ``(N, H, W, 3)`` array).

    The arithmetic is numpy's, not torch's, on purpose: the loader threads call this, and a thread that runs a
    parallel torch op gets an OpenMP thread team of its own that outlives the op. With more OpenMP threads than
    cores, the training thread's team stops spinning between ops and sleeps, and every one of a small network's
    thousands of ops per step then waits for its threads to wake: on 2 cores the NAFNet step took 1.7 times as long
    (``benchmarks/bench_loader_threads.py``). float32 division by 255, as torch's ``div_``: the same bits.
    """
    scaled = np.stack(images).astype(np.float32)
    scaled /= np.float32(255.0)
    return torch.from_numpy(scaled).permute(0, 3, 1, 2)


class CropBatches:
    """What both domains' batch builders hold: their rows, the rank's sampler, the crop side, the decode limit, and
    the probability that an image's weather is given as ``unknown`` (``train.weather_dropout``)."""

    def __init__(
        self,
        rows: list[dict],
        sampler: ShardSampler,
        crop: int,
        max_pixels: int,
        weather_dropout: float = 0.0,
    ):
        self.rows, self.sampler, self.crop, self.max_pixels = rows, sampler, crop, max_pixels
        self.weather_dropout = weather_dropout


class PairedBatches(CropBatches):
    """Crops of the labeled pairs: ``rows`` are :data:`fairweather.data.views.PAIRED_COLUMNS` dicts.

    clean_fraction: probability that a pair's input is replaced by its clean target (``train.clean_pair_fraction``),
    so the network also learns to leave clear content alone.
    """

    def __init__(self, *args: Any, clean_fraction: float = 0.0, **kwargs: Any):
        """:class:`CropBatches`' arguments, and ``clean_fraction``."""
        super().__init__(*args, **kwargs)
        self.clean_fraction = clean_fraction

    def sample(self, pick: Pick) -> tuple[np.ndarray, np.ndarray, str]:
        """One pair's ``(degraded, target, weather)`` crops."""
        row = self.rows[pick.index]
        rng = np.random.default_rng([self.sampler.seed, pick.epoch, pick.index, PAIRED_DOMAIN])
        images = [load_rgb(row["input_uri"], self.max_pixels), load_rgb(row["target_uri"], self.max_pixels)]
        degraded, target = crop_flip(images, self.crop, rng)
        # Drawn after the crop, so fractions of 0 leave every crop (and the pinned losses) as before.
        if self.clean_fraction and rng.random() < self.clean_fraction:
            degraded = target
        return degraded, target, dropped_weather(row["weather"], self.weather_dropout, rng)

    def __call__(self, step: int) -> dict:
        """``{"paired_input", "paired_target"}``: ``(B, 3, crop, crop)`` tensors of ``step``; ``"paired_weather"``,
        the B weathers the network is told; ``"paired_ids"``, the B pair ids (what a rank trained on, for logs and
        tests)."""
        picks = self.sampler.batch(step)
        inputs, targets, weathers = zip(*(self.sample(pick) for pick in picks), strict=True)
        ids = [self.rows[pick.index]["pair_id"] for pick in picks]
        return {
            "paired_input": to_tensor(inputs),
            "paired_target": to_tensor(targets),
            "paired_weather": list(weathers),
            "paired_ids": ids,
        }


class RealBatches(CropBatches):
    """Crops of the labeled real pool: ``rows`` are :data:`fairweather.data.views.REAL_COLUMNS` dicts."""

    def sample(self, pick: Pick) -> tuple[np.ndarray, np.ndarray | None, str]:
        """One image's ``(input, pseudo-label or None, weather)`` crops."""
        row = self.rows[pick.index]
        rng = np.random.default_rng([self.sampler.seed, pick.epoch, pick.index, REAL_DOMAIN])
        images = [load_rgb(row["uri"], self.max_pixels)]
        if row["pseudo_uri"] is not None:
            images.append(load_rgb(row["pseudo_uri"], self.max_pixels))
        cropped = crop_flip(images, self.crop, rng)
        weather = dropped_weather(row["weather"], self.weather_dropout, rng)
        return cropped[0], (cropped[1] if len(cropped) > 1 else None), weather

    def __call__(self, step: int) -> dict:
        """``{"real_input", "real_pseudo", "real_has_pseudo", "real_weather", "d_pos", "d_neg"}`` of ``step``;
        rows without a pseudo-label carry zeros in ``real_pseudo`` and False in ``real_has_pseudo``.
        ``"real_ids"``: the B ``(image_id, pseudo_uri)`` (what a rank trained on, for logs and tests)."""
        picks = self.sampler.batch(step)
        inputs, pseudos, weathers = zip(*(self.sample(pick) for pick in picks), strict=True)
        rows = [self.rows[pick.index] for pick in picks]
        return {
            "real_weather": list(weathers),
            "real_input": to_tensor(inputs),
            "real_pseudo": to_tensor(
                [np.zeros_like(x) if p is None else p for x, p in zip(inputs, pseudos, strict=True)]
            ),
            "real_has_pseudo": torch.tensor([p is not None for p in pseudos]),
            "d_pos": [row["d_pos"] for row in rows],
            "d_neg": [row["d_neg"] for row in rows],
            "real_ids": [(row["image_id"], row["pseudo_uri"]) for row in rows],
        }


class BatchPrefetcher:
    """Builds ``{**paired(step), **real(step)}`` for steps ``start, start + 1, ...`` on a thread pool, ahead of use.

    Iterating yields ``(batch, wait_seconds)``: the time the caller blocked for that batch.
    """

    def __init__(self, builders: Sequence[Callable[[int], dict]], start: int, threads: int, prefetch: int):
        self.builders, self.next_step, self.prefetch = builders, start, prefetch
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fairweather-loader")
        self.pending: collections.deque[Future] = collections.deque()

    def _build(self, step: int) -> dict:
        batch: dict = {}
        for builder in self.builders:
            batch.update(builder(step))
        return batch

    def __iter__(self) -> Iterator[tuple[dict, float]]:
        return self

    def __next__(self) -> tuple[dict, float]:
        while len(self.pending) < self.prefetch:
            self.pending.append(self.pool.submit(self._build, self.next_step))
            self.next_step += 1
        start = time.perf_counter()
        batch = self.pending.popleft().result()
        return batch, time.perf_counter() - start

    def close(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
