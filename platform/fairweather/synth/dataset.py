"""Write generated data sets: labeled pairs (listed as ``paired`` records) and unlabeled pools, deterministic.

Image ``i`` of a set is drawn from ``numpy.random.default_rng([seed, stream, i])`` (stream 0: pairs, 1: pool), so
its pixels do not depend on how many images are generated or in which order; a pair's train/val/test split depends
only on its index within its weather (:mod:`fairweather.synth.paired`). Files are written to a temporary name and
renamed, unchanged files are not rewritten, and the pool manifest is written last: a rerun with the same config
changes nothing, and a crash never leaves a manifest that names a missing or half-written file. The caller writes
the returned pair records to the ``paired`` table, after the files they name exist.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from fairweather.contracts.config.synth import SynthConfig
from fairweather.contracts.io import (
    atomic_write_bytes,
    filesystem_for,
    has_scheme,
    list_files,
    write_if_changed,
)
from fairweather.contracts.vocab import IMAGE_SUFFIXES
from fairweather.imaging import ImageDecodeError, read_image_file

from .degrade import degrade, sample_params
from .paired import PairRecord, sequence_fraction, split_for
from .scenes import fit_photo, photo_pseudo_depth, procedural_scene

log = logging.getLogger(__name__)

#: Random streams: the paired set and the pool draw from separate seeds (not to be confused with train/val/test).
PAIRED_STREAM, POOL_STREAM = 0, 1


@dataclass(frozen=True)
class SynthResult:
    paired_dir: str
    pool_dir: str
    num_paired: int
    num_unlabeled: int
    #: Image files written or rewritten (0 on an identical rerun).
    files_written: int
    source: str
    #: The generated pairs (dataset ``synth``), in index order, for the ``paired`` table.
    pairs: tuple[PairRecord, ...] = ()


def encode_png(image: np.ndarray) -> bytes:
    """``(H, W, 3)`` float in [0, 1] -> PNG bytes (8-bit, deterministic)."""
    buffer = io.BytesIO()
    Image.fromarray((image.clip(0, 1) * 255.0 + 0.5).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_manifest(path: str, rows: list[dict]) -> None:
    """Write the pool manifest Parquet atomically (temp file + rename), sorted by name for stable bytes."""
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["name"]))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def load_clean_photos(folder: str, size: tuple[int, int], max_pixels: int) -> list[tuple[str, np.ndarray]]:
    """Real clean photos fitted to ``size``; unreadable or non-image files are skipped with a warning naming them."""
    files = list_files(folder, suffixes=IMAGE_SUFFIXES).files
    photos = []
    for path in files:
        try:
            photos.append((str(path), fit_photo(read_image_file(path, max_pixels=max_pixels), size)))
        except ImageDecodeError as err:
            log.warning("skipping %s: %s", path, err)
    if not photos:
        raise FileNotFoundError(f"no usable clean photos in {folder} ({len(files)} image-named file(s))")
    return photos


def _clean_sample(
    index: int, rng: np.random.Generator, cfg: SynthConfig, photos: list[tuple[str, np.ndarray]] | None
) -> tuple[np.ndarray, np.ndarray, str]:
    if photos is None:
        image, depth = procedural_scene(rng, cfg.size)
        return image, depth, "procedural"
    source, image = photos[index % len(photos)]
    return image, photo_pseudo_depth(cfg.size), source


def generate(cfg: SynthConfig, *, max_pixels: int = 50_000_000) -> SynthResult:
    """Write ``<out>/paired/{input,target}`` and ``<out>/pool`` as described in the module docstring."""
    out = cfg.out.rstrip("/") if has_scheme(cfg.out) else str(Path(cfg.out).expanduser().resolve())
    photos = load_clean_photos(cfg.clean_photos, cfg.size, max_pixels) if cfg.clean_photos else None
    paired, pool = f"{out}/paired", f"{out}/pool"
    height, width = cfg.size
    written = 0
    pairs, pool_rows = [], []
    jobs = [(PAIRED_STREAM, i) for i in range(cfg.num_paired)] + [
        (POOL_STREAM, i) for i in range(cfg.num_unlabeled)
    ]
    for stream, index in tqdm(jobs, desc="synth", unit="img", disable=None):
        rng = np.random.default_rng([cfg.seed, stream, index])
        weather = cfg.weathers[index % len(cfg.weathers)]
        clean, depth, source = _clean_sample(index, rng, cfg, photos)
        params = sample_params(weather, cfg, rng)
        degraded_png = encode_png(degrade(clean, depth, weather, params, rng))
        name = f"{weather}_{index:05d}"
        if stream == PAIRED_STREAM:
            input_uri, target_uri = f"{paired}/input/{name}.png", f"{paired}/target/{name}.png"
            written += write_if_changed(input_uri, degraded_png)
            written += write_if_changed(target_uri, encode_png(clean))
            # Index within its weather: weathers take turns, so pair i is the (i // #weathers)-th of its weather.
            u = sequence_fraction(index // len(cfg.weathers))
            pair_split = split_for(u, cfg.val_fraction, cfg.test_fraction)
            pairs.append(
                PairRecord(
                    f"synth/{name}", "synth", pair_split, weather, input_uri, target_uri, width, height
                )
            )
        else:
            uri = f"{pool}/{weather}/{name}.png"
            written += write_if_changed(uri, degraded_png)
            pool_rows.append({"name": name, "weather": weather, "seed": cfg.seed, "index": index, "source": source,
                              "params": json.dumps(params, sort_keys=True), "uri": uri})  # fmt: skip
    fs, pool_path = filesystem_for(pool)
    fs.create_dir(pool_path, recursive=True)  # the label stage lists it even when it is empty
    if pool_rows:
        write_manifest(f"{pool}/manifest.parquet", pool_rows)
    return SynthResult(
        paired_dir=paired,
        pool_dir=pool,
        num_paired=len(pairs),
        num_unlabeled=len(pool_rows),
        files_written=written,
        source=cfg.clean_photos or "procedural",
        pairs=tuple(pairs),
    )
