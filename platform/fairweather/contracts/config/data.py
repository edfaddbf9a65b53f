"""Where the data sets and the stage tables live."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataConfig:
    #: Unlabeled real pool: a folder, a glob, or a manifest (.txt/.csv/.parquet) of URIs; local or cloud.
    pool: str = "runs/data/pool"
    #: Labeled pairs written by ``fairweather synth`` (input/ + target/ + manifest.parquet).
    paired: str = "runs/data/paired"
    #: Root URI of the stage tables (pool, labels, errors, pseudo_labels, metrics).
    tables: str = "runs/tables"
    #: Images with more pixels than this are rejected as decompression bombs.
    max_image_pixels: int = 50_000_000
