"""Write generated data sets: labeled pairs (listed as ``paired`` records) and unlabeled pools, deterministic.

Clean images are procedural scenes (dataset ``synth``), or real clean photos when ``synth.clean`` is set or the
caller passes the listed files as ``clean_sources`` (dataset ``synth-photo``, :mod:`fairweather.synth.photo_set`).

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
from collections.abc import Sequence
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

from .clean import BUNDLED, CleanPhotoError, CleanSource, bundled_clean_photos
from .degrade import degrade, sample_params
from .depth import DepthFn
from .paired import SCENE_DATASET, PairRecord, sequence_fraction, split_for
from .photo_set import generate_photo_pairs
from .scenes import procedural_scene

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
    #: The generated pairs (dataset ``synth`` or ``synth-photo``), in index order, for the ``paired`` table.
    pairs: tuple[PairRecord, ...] = ()
    #: Clean-photo sources that were not used, one per file with its reason (for the ``errors`` table).
    errors: tuple[CleanPhotoError, ...] = ()
    #: Where the depth maps came from ("procedural", "model:<name>", "prior:...").
    depth_sources: tuple[str, ...] = ()
    #: Real-photo mode: clean photos per split (train / val / test); empty for procedural scenes.
    photo_splits: dict[str, int] | None = None


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


def clean_sources_of(clean: str) -> list[CleanSource]:
    """``synth.clean`` as a list of files: ``bundled`` (the shipped photos) or a folder's image files.

    Globs and manifests are listed by the caller (the stage, with the pool's listing rules) and passed to
    :func:`generate` as ``clean_sources``.
    """
    if clean == BUNDLED:
        return bundled_clean_photos()
    listing = list_files(clean, suffixes=IMAGE_SUFFIXES)  # FileNotFoundError if not a folder
    return [str(path) for path in listing.files]


def generate(
    cfg: SynthConfig,
    *,
    max_pixels: int = 50_000_000,
    clean_sources: Sequence[CleanSource] | None = None,
    depth_fn: DepthFn | None = None,
    depth_name: str = "depth-model",
) -> SynthResult:
    """Write ``<out>/paired/{input,target}`` and ``<out>/pool`` as described in the module docstring.

    clean_sources: real clean photos (paths/URIs or ``(name, bytes)``) to degrade instead of procedural scenes;
    None with ``synth.clean`` set lists that (:func:`clean_sources_of`). depth_fn / depth_name: the depth model
    for real photos (relative inverse depth, see :mod:`fairweather.synth.depth`) and its name for the rows; None
    uses the geometric prior. Raises :class:`~fairweather.synth.photo_set.CleanPhotoShortage` before writing
    anything when too few photos are usable for the requested splits.
    """
    out = cfg.out.rstrip("/") if has_scheme(cfg.out) else str(Path(cfg.out).expanduser().resolve())
    paired, pool = f"{out}/paired", f"{out}/pool"
    if clean_sources is None and cfg.clean:
        clean_sources = clean_sources_of(cfg.clean)
    if clean_sources is not None:
        made = generate_photo_pairs(
            cfg, list(clean_sources), paired_dir=paired, pool_dir=pool, encode=encode_png, max_pixels=max_pixels,
            depth_fn=depth_fn, depth_name=depth_name, paired_stream=PAIRED_STREAM, pool_stream=POOL_STREAM,
        )  # fmt: skip
        if made.pool_rows:
            write_manifest(f"{pool}/manifest.parquet", list(made.pool_rows))
        return SynthResult(
            paired_dir=paired,
            pool_dir=pool,
            num_paired=len(made.pairs),
            num_unlabeled=len(made.pool_rows),
            files_written=made.files_written,
            source=cfg.clean or f"{len(clean_sources)} listed clean photo(s)",
            pairs=made.pairs,
            errors=made.errors,
            depth_sources=made.depth_sources,
            photo_splits=made.photo_splits,
        )
    height, width = cfg.size
    written = 0
    pairs, pool_rows = [], []
    jobs = [(PAIRED_STREAM, i) for i in range(cfg.num_paired)] + [
        (POOL_STREAM, i) for i in range(cfg.num_unlabeled)
    ]
    for stream, index in tqdm(jobs, desc="synth", unit="img", disable=None):
        rng = np.random.default_rng([cfg.seed, stream, index])
        weather = cfg.weathers[index % len(cfg.weathers)]
        clean, depth = procedural_scene(rng, cfg.size)
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
            degradation = json.dumps({**params, "weather": weather, "seed": cfg.seed}, sort_keys=True)
            pairs.append(
                PairRecord(
                    f"{SCENE_DATASET}/{name}",
                    SCENE_DATASET,
                    pair_split,
                    weather,
                    input_uri,
                    target_uri,
                    width,
                    height,
                    clean_source="procedural",
                    degradation=degradation,
                    depth_source="procedural",
                )
            )
        else:
            uri = f"{pool}/{weather}/{name}.png"
            written += write_if_changed(uri, degraded_png)
            pool_rows.append({"name": name, "weather": weather, "seed": cfg.seed, "index": index, "source": "procedural",
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
        source="procedural",
        pairs=tuple(pairs),
        depth_sources=("procedural",),
    )
