"""Rows of the ``paired`` table, shared by the generator and the folder adapter: splits and table-relative URIs.

A pair's split is a pure function of a number ``u`` in [0, 1) that belongs to the pair alone: ``u < test_fraction``
is ``test``, ``u >= 1 - val_fraction`` is ``val``, the rest ``train``. Generated pairs take ``u`` from the Weyl
sequence ``frac(k * golden ratio)`` of their index ``k`` within their weather: it depends on ``k`` only (a pair keeps
its split when more pairs are generated) and fills [0, 1) evenly from the first terms on, so every weather reaches
every split early (at 10 % / 10 %: from 9 pairs of a weather on). Imported pairs take ``u`` from a hash of a stable
name, which has the same stability and no order to exploit.

URIs are stored relative to the table-store root (:func:`fairweather.contracts.io.relative_uri`), so a table moved
together with its data, or read from another working directory, still resolves.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from fairweather.contracts.io import relative_uri
from fairweather.contracts.schemas import PAIRED
from fairweather.contracts.tables import TableStore, conform

SPLITS = ("train", "val", "test")
#: The ``dataset`` of generated pairs: procedural scenes, and real clean photos with physically based weather.
SCENE_DATASET = "synth"
PHOTO_DATASET = "synth-photo"
#: Names ``import-pairs`` may not take: its pairs would be scored as generated ones.
GENERATED_DATASETS = (SCENE_DATASET, PHOTO_DATASET)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
#: Columns that define a pair; ``created_at`` is not one (a rerun that changes nothing writes nothing).
_CONTENT = (
    "dataset", "split", "weather", "input_uri", "target_uri", "width", "height", "clean_source", "degradation",
    "depth_source",
)  # fmt: skip


def split_for(u: float, val_fraction: float, test_fraction: float) -> str:
    """``test`` for u in [0, test_fraction), ``val`` for u in [1 - val_fraction, 1), else ``train``."""
    if u < test_fraction:
        return "test"
    if u >= 1.0 - val_fraction:
        return "val"
    return "train"


def sequence_fraction(k: int) -> float:
    """The k-th term of the golden-ratio Weyl sequence in [0, 1): 0, 0.618, 0.236, 0.854, 0.472, 0.090, ..."""
    return (k * _GOLDEN) % 1.0


def hash_fraction(key: str) -> float:
    """A uniform number in [0, 1) from the sha256 of ``key`` (same on every machine and Python version)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


@dataclass(frozen=True)
class PairRecord:
    """One labeled pair before it becomes a table row; ``input`` and ``target`` are local paths or URIs."""

    pair_id: str
    dataset: str
    split: str
    weather: str
    input: str
    target: str
    width: int
    height: int
    #: Generated pairs only (None for imported ones): the clean image's origin (a photo's path / URI as listed,
    #: or ``procedural``), the degradation's parameters as sorted JSON (weather, model version, every drawn
    #: value, the crop), and where the depth came from (``model:<name>``, ``prior:...``, ``procedural``).
    clean_source: str | None = None
    degradation: str | None = None
    depth_source: str | None = None


def paired_table(records: Iterable[PairRecord], root: str, created_at: datetime | None = None) -> pa.Table:
    """The records as ``paired`` rows, URIs relative to table-store ``root``; raises on a bad split or duplicate."""
    records = list(records)
    bad = sorted({r.split for r in records} - set(SPLITS))
    if bad:
        raise ValueError(f"unknown split(s) {bad}; expected one of {SPLITS}")
    ids = [r.pair_id for r in records]
    repeated = sorted(pair_id for pair_id, n in Counter(ids).items() if n > 1)
    if repeated:
        raise ValueError(f"duplicate pair_id(s): {repeated[:5]}")
    now = created_at or datetime.now(timezone.utc)
    columns = {
        "pair_id": ids,
        "dataset": [r.dataset for r in records],
        "split": [r.split for r in records],
        "weather": [r.weather for r in records],
        "input_uri": [relative_uri(root, r.input) for r in records],
        "target_uri": [relative_uri(root, r.target) for r in records],
        "width": [r.width for r in records],
        "height": [r.height for r in records],
        "clean_source": pa.array([r.clean_source for r in records], pa.string()),
        "degradation": pa.array([r.degradation for r in records], pa.string()),
        "depth_source": pa.array([r.depth_source for r in records], pa.string()),
        "created_at": [now] * len(records),
    }
    return conform(PAIRED, pa.table(columns))


def write_pairs(store: TableStore, records: Iterable[PairRecord]) -> int:
    """Add the records that are new or changed to the store's ``paired`` table; returns how many were written.

    Unchanged rows are not written again, so a rerun that changes nothing adds no table part.
    """
    table = paired_table(records, store.root)
    existing = store.read("paired")
    stored = {
        row["pair_id"]: tuple(row[c] for c in _CONTENT)
        for row in existing.select(["pair_id", *_CONTENT]).to_pylist()
    }
    keep = [
        i
        for i, row in enumerate(table.select(["pair_id", *_CONTENT]).to_pylist())
        if stored.get(row["pair_id"]) != tuple(row[c] for c in _CONTENT)
    ]
    store.write("paired", table.take(pa.array(keep, pa.int64())))
    return len(keep)
