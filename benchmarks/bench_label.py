"""Throughput of the labeling job: Ray Data (1 and 2 actors) vs. the same backend in a plain Python loop.

    .venv/bin/python benchmarks/bench_label.py label.batch_size=8 vlm.max_new_tokens=32

Generates a pool of random PNGs, then labels it side by side in one process (no tables are written: both sides
stop at the label records):
``loop`` (read, decode, downscale and ``label_images`` in batches, in this process), ``ray x1`` and ``ray x2``
(``label_dataset`` with 1 and 2 actors, on a private local Ray). Each is run on the first ``--base-images`` files
and on all ``--images``; it prints

- end-to-end images/s on the full pool, engine loading and (for Ray) actor start-up included, and
- marginal images/s = (images - base_images) / (seconds(full) - seconds(base)): the rate once the fixed start-up
  cost is paid, which is what a long job on a real pool sees (Ray Data delivers output in bursts, so timing
  batches on the driver would not measure it).

Ratios are against the loop (and x2 against x1). Model: the config's VLM (``tiny:llava`` by default, CPU). The
tiny model labels an image in ~5 ms, so thousands of images are needed before its compute outweighs the ~7 s of
Ray and actor start-up; a real 7B VLM needs far fewer.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import ray
import torch
from PIL import Image

from fairweather.contracts.config import FairweatherConfig, load_config
from fairweather.contracts.io import read_bytes
from fairweather.imaging import decode_image, limit_short_side
from fairweather.stages.infra.pool import list_pool
from fairweather.stages.label.actors import label_dataset
from fairweather.tiny import resolve_model_ref
from fairweather.vlm import build_backend, label_images


def make_pool(folder: Path, count: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    weathers = ("rain", "haze", "snow")
    for weather in weathers:
        (folder / weather).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / weathers[index % 3] / f"{index:05d}.png")


def loop_batches(cfg: FairweatherConfig, items: list[dict]) -> Iterable[int]:
    uris = [str(item["uri"]) for item in items]
    backend = build_backend(cfg.vlm, resolve_model_ref(cfg.vlm.model_id, cfg.runtime.model_cache_dir))
    for start in range(0, len(uris), cfg.label.batch_size):
        images = []
        for uri in uris[start : start + cfg.label.batch_size]:
            rgb = decode_image(read_bytes(uri), max_pixels=cfg.data.max_image_pixels)
            images.append(limit_short_side(rgb, cfg.label.image_short_side))
        yield len(label_images(backend, images, cfg.vlm))


def ray_batches(cfg: FairweatherConfig, items: list[dict]) -> Iterable[int]:
    dataset = label_dataset(cfg, items, frozenset(), backend_factory=None)
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield batch.num_rows


def seconds(fn: Callable[[], Iterable[int]], expected: int) -> float:
    """Wall time to consume ``fn()``; checks that every image came out."""
    start = time.perf_counter()
    done = sum(fn())
    if done != expected:
        raise RuntimeError(f"labeled {done} images, expected {expected}")
    return time.perf_counter() - start


def compare(
    name: str, run: Callable[[list[dict]], Iterable[int]], items: list[dict], base: int
) -> tuple[float, float]:
    """``(end-to-end images/s on all items, marginal images/s between the first base items and all)``."""
    small, full = seconds(lambda: run(items[:base]), base), seconds(lambda: run(items), len(items))
    end_to_end, marginal = len(items) / full, (len(items) - base) / (full - small)
    print(f"{name:>8}: {base} images in {small:6.2f}s, {len(items)} in {full:6.2f}s -> {end_to_end:7.2f} images/s "
          f"end-to-end, {marginal:7.2f} images/s marginal", flush=True)  # fmt: skip
    return end_to_end, marginal


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2400, help="generated pool size (default 2400)")
    parser.add_argument(
        "--base-images", type=int, default=240, help="smaller run for the marginal rate (240)"
    )
    parser.add_argument(
        "--size", type=int, default=64, help="side of the generated square images (default 64 px)"
    )
    parser.add_argument(
        "--config", default="smoke", help="profile or YAML (default smoke: tiny:llava on CPU)"
    )
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the private local Ray (default 2)")
    parser.add_argument(
        "--loop-threads",
        type=int,
        default=1,
        help="torch threads of the loop (default 1: one actor's budget; 2 threads on a busy 2-core machine make "
        "OpenMP spin-wait and the timings erratic)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. vlm.max_new_tokens=32"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-label-") as tmp:
        pool = Path(tmp) / "pool"
        make_pool(pool, args.images, args.size)
        base = [
            f"data.pool={pool}",
            f"data.tables={tmp}/tables",
            f"runtime.runs_dir={tmp}/runs",
            *args.overrides,
        ]
        cfg = load_config(args.config, base)
        items = list_pool(str(pool)).items
        print(f"{len(items)} images of {args.size}px, model {cfg.vlm.model_id}, batch {cfg.label.batch_size}, "
              f"max_new_tokens {cfg.vlm.max_new_tokens}, {args.num_cpus} CPUs")  # fmt: skip
        # Materialise tiny models once, outside the timings.
        build_backend(cfg.vlm, resolve_model_ref(cfg.vlm.model_id, cfg.runtime.model_cache_dir))
        torch.set_num_threads(args.loop_threads)
        loop = compare("loop", lambda part: loop_batches(cfg, part), items, args.base_images)
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            # Each actor gets one CPU's worth of threads; what is left runs the read/decode tasks.
            one = load_config(args.config, [*base, "label.concurrency=1", "label.num_cpus_per_actor=1"])
            x1 = compare("ray x1", lambda part: ray_batches(one, part), items, args.base_images)
            cpus = (args.num_cpus - 1) / 2
            two = load_config(args.config, [*base, "label.concurrency=2", f"label.num_cpus_per_actor={cpus}"])
            x2 = compare("ray x2", lambda part: ray_batches(two, part), items, args.base_images)
        finally:
            ray.shutdown()

    print("ratios (end-to-end | marginal):")
    for name, a, b in (("ray x1 / loop", x1, loop), ("ray x2 / loop", x2, loop), ("ray x2 / ray x1", x2, x1)):
        print(f"  {name:>15}: {a[0] / b[0]:5.2f} | {a[1] / b[1]:5.2f}")


if __name__ == "__main__":
    main()
