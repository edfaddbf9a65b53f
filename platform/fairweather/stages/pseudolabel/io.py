"""The pseudo-label job's work rows and its two Ray Data steps of its own; the rest is the evaluation job's.

One work row per (pool image, candidate source) not yet in the lineage's history. The pipeline reuses evaluation's
read step (:func:`fairweather.stages.evaluate.io.read_work_one`), restore actors and score actors; between them
:func:`store_candidates` writes every restored image as a lossless PNG named by its sha256 (content-addressed: a
rerun rewrites nothing, equal restorations share one file). The ``input`` candidate is the pool file itself (its
image_id is already the sha256 of its bytes), so the pool is never copied.

A candidate of another method's folder is matched to a pool image by the image's path below ``data.pool`` (suffix
ignored), else by its unique base name; an output of another size than the input is resized to the input's size
(training crops input and pseudo-label at the same place), which the row's message records.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
from PIL import Image

from fairweather.contracts.io import has_scheme, write_if_changed
from fairweather.stages.evaluate.actors import RestoreActor, as_target_size
from fairweather.stages.evaluate.io import (
    KIND_CHECKPOINT,
    KIND_FILE,
    KIND_INPUT,
    WORK_SCHEMA,
    BaselineOutputs,
    pixels_of,
    read_work_one,
)

#: Source name of the untouched input as a candidate.
INPUT_SOURCE = "input"

#: Evaluation's work row plus where the candidate is stored and what restoring it cost.
PSEUDO_WORK_SCHEMA = pa.schema(
    [
        *WORK_SCHEMA,
        ("candidate_uri", pa.string()),
        ("candidate_sha256", pa.string()),
        ("restore_seconds", pa.float64()),
    ]
)


def ema_source(round_index: int) -> str:
    """Source name of the EMA teacher's restorations after round ``round_index``."""
    return f"ema@round-{round_index}"


@dataclass(frozen=True)
class Source:
    """Where one kind of candidate comes from: the input, a checkpoint's EMA teacher, or a folder of outputs."""

    name: str
    kind: str  # KIND_INPUT | KIND_CHECKPOINT | KIND_FILE
    checkpoint: str | None = None
    outputs: BaselineOutputs | None = None


def pool_name(uri: str, pool_root: str) -> str:
    """The name a pool image is matched on: its path below ``pool_root`` without suffix, else its base name."""
    if not (has_scheme(uri) or has_scheme(pool_root)):  # local paths: compare absolute forms
        uri, pool_root = os.path.abspath(uri), os.path.abspath(pool_root)
    root = pool_root.rstrip("/")
    relative = uri[len(root) + 1 :] if uri.startswith(root + "/") else PurePosixPath(uri).name
    return str(PurePosixPath(relative).with_suffix(""))


def work_rows(
    images: list[dict], sources: list[Source], done: set[tuple[str, str]], *, lineage: str, pool_root: str
) -> tuple[list[dict], dict[str, int]]:
    """Work rows for every (image, source) not in ``done`` (``(image_id, source)`` already in the history), and per
    folder source the number of pool images it has no output for.

    images: ``real_view`` rows (``image_id``, resolved ``uri``, ``weather``).
    """
    rows, unmatched = [], {s.name: 0 for s in sources if s.kind == KIND_FILE}
    for image in images:
        base = {
            "dataset": lineage,
            "image": image["image_id"],
            "weather": image["weather"] or "unknown",
            "target_uri": None,
            "example": False,
        }
        for source in sources:
            if (image["image_id"], source.name) in done:
                continue
            uri, target = image["uri"], None
            if source.kind == KIND_FILE:
                uri = source.outputs.match(pool_name(image["uri"], pool_root))
                if uri is None:
                    unmatched[source.name] += 1
                    continue
                target = image["uri"]  # read too: the candidate takes the input's size
            rows.append(
                {**base, "method": source.name, "kind": source.kind, "source_uri": uri, "target_uri": target}
            )
    return rows, unmatched


def read_candidates(batch: pa.Table, *, max_pixels: int) -> pa.Table:
    """Ray Data map: work rows -> ``PSEUDO_WORK_SCHEMA`` rows with pixels (full resolution), one per input row."""
    rows = [read_work_one(row, max_pixels=max_pixels, short_side=None) for row in batch.to_pylist()]
    return pa.Table.from_pylist(rows, schema=PSEUDO_WORK_SCHEMA)


class TimedRestoreActor(RestoreActor):
    """The evaluation restore actor, recording each restored row's share of the batch's restore time."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        start = time.perf_counter()
        out = super().__call__(batch)
        restored = [kind == KIND_CHECKPOINT for kind in out.column("kind").to_pylist()]
        share = (time.perf_counter() - start) / max(1, sum(restored))
        seconds = pa.array([share if r else None for r in restored], pa.float64())
        return out.set_column(out.schema.get_field_index("restore_seconds"), "restore_seconds", seconds)


def encode_png(rgb: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 -> PNG bytes (lossless; deterministic for equal pixels, so equal files share a name)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _store_one(row: dict, candidates_dir: str) -> None:
    if row["kind"] == KIND_INPUT:  # the pool file itself: image_id is the sha256 of its bytes
        row.update(candidate_uri=row["source_uri"], candidate_sha256=row["image"])
        return
    rgb = pixels_of(row)
    if row["target"]:
        target = pixels_of(row, "target")
        if rgb.shape != target.shape:
            row["message"] = (
                f"output {rgb.shape[1]}x{rgb.shape[0]} resized to the input's {target.shape[1]}x{target.shape[0]}"
            )
            rgb = as_target_size(rgb, target)
            row.update(pixels=rgb.tobytes(), height=rgb.shape[0], width=rgb.shape[1])
    data = encode_png(rgb)
    digest = hashlib.sha256(data).hexdigest()
    uri = f"{candidates_dir.rstrip('/')}/{digest}.png"
    write_if_changed(uri, data)
    row.update(candidate_uri=uri, candidate_sha256=digest)


def store_candidates(batch: pa.Table, *, candidates_dir: str) -> pa.Table:
    """Ray Data map: write each ``ok`` row's image as ``<candidates_dir>/<sha256>.png``; a write that fails makes
    the row ``failed`` (``write:<error>``) instead of ending the job. The targets are dropped (not scored)."""
    rows = batch.to_pylist()
    for row in rows:
        if row["status"] == "ok":
            try:
                _store_one(row, candidates_dir)
            except Exception as err:  # disk full, permission, a folder in the way: this candidate only
                row.update(status="failed", error_type=f"write:{type(err).__name__}", message=str(err))
        row.update(target=None, target_height=None, target_width=None)
    return pa.Table.from_pylist(rows, schema=batch.schema)
