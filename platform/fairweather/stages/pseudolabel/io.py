"""The pseudo-label job's engine rows and the one step of its own: storing each candidate as a PNG.

One engine row per (pool image, candidate source) not yet in the lineage's history: group = the lineage, image =
the pool image's ``image_id``, source = the candidate source. The engine (:mod:`fairweather.stages.engine`)
reads, restores and scores them; between restoring and scoring :func:`store_candidates` writes every restored image
as a lossless PNG named by its sha256 (content-addressed: a rerun rewrites nothing, equal restorations share one
file). The ``input`` candidate is the pool file itself (its image_id is already the sha256 of its bytes), so the
pool is never copied.

A candidate of another method's folder is matched to a pool image by the image's path below ``data.pool`` (suffix
ignored), else by its unique base name; its ``input_uri`` is the pool image, so an output of another size than the
input is resized to the input's size (training crops input and pseudo-label at the same place), which the row's
message records.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
from PIL import Image

from fairweather.contracts.io import has_scheme, write_if_changed
from fairweather.stages.engine.rows import (
    KIND_FILE,
    KIND_INPUT,
    OutputFolder,
    pixels_of,
    resize_to,
    work_row,
)

#: Columns :func:`store_candidates` adds to the engine's rows: where the candidate is stored, and its sha256.
CANDIDATE_FIELDS = [pa.field("candidate_uri", pa.string()), pa.field("candidate_sha256", pa.string())]


def ema_source(round_index: int) -> str:
    """Source name of the EMA teacher's restorations after round ``round_index``."""
    return f"ema@round-{round_index}"


@dataclass(frozen=True)
class Source:
    """Where one kind of candidate comes from: the input, a checkpoint's EMA teacher, or a folder of outputs."""

    name: str
    kind: str  # KIND_INPUT | KIND_CHECKPOINT | KIND_FILE
    checkpoint: str | None = None
    outputs: OutputFolder | None = None


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
    """Engine work rows for every (image, source) not in ``done`` (``(image_id, source)`` already in the history),
    and per folder source the number of pool images it has no output for.

    images: ``real_view`` rows (``image_id``, resolved ``uri``, ``weather``).
    """
    rows, unmatched = [], {s.name: 0 for s in sources if s.kind == KIND_FILE}
    for image in images:
        common = {"group": lineage, "image": image["image_id"], "weather": image["weather"] or "unknown"}
        for source in sources:
            if (image["image_id"], source.name) in done:
                continue
            if source.kind == KIND_FILE:
                uri = source.outputs.match(pool_name(image["uri"], pool_root))
                if uri is None:
                    unmatched[source.name] += 1
                    continue
                row = work_row(
                    **common, source=source.name, kind=KIND_FILE, source_uri=uri, input_uri=image["uri"]
                )
            else:
                row = work_row(**common, source=source.name, kind=source.kind, source_uri=image["uri"])
            rows.append(row)
    return rows, unmatched


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
    if row["input"]:
        degraded = pixels_of(row, "input")
        if rgb.shape != degraded.shape:
            row["message"] = (
                f"output {rgb.shape[1]}x{rgb.shape[0]} resized to the input's {degraded.shape[1]}x{degraded.shape[0]}"
            )
            rgb = resize_to(rgb, degraded)
            row.update(pixels=rgb.tobytes(), height=rgb.shape[0], width=rgb.shape[1])
    data = encode_png(rgb)
    digest = hashlib.sha256(data).hexdigest()
    uri = f"{candidates_dir.rstrip('/')}/{digest}.png"
    write_if_changed(uri, data)
    row.update(candidate_uri=uri, candidate_sha256=digest)


def store_candidates(batch: pa.Table, *, candidates_dir: str) -> pa.Table:
    """Ray Data map between restoring and scoring: write each ``ok`` row's image as
    ``<candidates_dir>/<sha256>.png`` and add :data:`CANDIDATE_FIELDS`; a write that fails makes the row ``failed``
    (``write:<error>``) instead of ending the job."""
    rows = batch.to_pylist()
    for row in rows:
        row.update(candidate_uri=None, candidate_sha256=None)
        if row["status"] == "ok":
            try:
                _store_one(row, candidates_dir)
            except Exception as err:  # disk full, permission, a folder in the way: this candidate only
                row.update(status="failed", error_type=f"write:{type(err).__name__}", message=str(err))
    return pa.Table.from_pylist(rows, schema=pa.schema([*batch.schema, *CANDIDATE_FIELDS]))
