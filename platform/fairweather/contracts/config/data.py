"""Where the data sets and the stage tables live."""

from __future__ import annotations

from dataclasses import dataclass

from .loader import AT_LEAST_ONE, check_ranges


@dataclass(frozen=True)
class DataConfig:
    #: Unlabeled real pool: a folder, a glob, or a manifest (.txt/.csv/.parquet) of URIs; local or cloud. An
    #: existing path is always a path, even with ``[``, ``*`` or ``?`` in its name; only a missing one is a glob.
    #: Unset in a config file: ``<synth.out>/pool`` (``load_config`` derives it; the defaults here are those of
    #: ``runtime.runs_dir: runs``).
    pool: str = "runs/data/pool"
    #: Follow links that point outside the listed folder: the pool, test-set folders, restore inputs and
    #: ``import-pairs`` folders (never into the same folder twice either way).
    follow_links_out: bool = False
    #: Labeled pairs written by ``fairweather synth`` (input/ + target/ + manifest.parquet); unset:
    #: ``<synth.out>/paired``.
    paired: str = "runs/data/paired"
    #: Root URI of the stage tables (pool, labels, errors, pseudo_labels, metrics); unset: ``<runs_dir>/tables``.
    tables: str = "runs/tables"
    #: Folders / URI prefixes that manifests (``data.pool``, ``evaluate.test_sets``) may name files in; a manifest
    #: naming a file outside every root is refused before anything is read. Empty: no restriction.
    roots: tuple[str, ...] = ()
    #: Images with more pixels than this are rejected as decompression bombs (Pillow's own limit is lifted to it).
    max_image_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        check_ranges(self, max_image_pixels=AT_LEAST_ONE)
