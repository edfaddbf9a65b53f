"""The evaluation job's inputs: test sets listed on the driver, one work row per (image, method), read in tasks.

A test set is ``paired:<split>`` (the ``paired`` table: inputs with clean targets), or a folder / glob / manifest of
images listed under the labeling stage's rules (:func:`fairweather.stages.infra.pool.list_pool`: weather from the
sub-folder name or the manifest, nothing skipped silently). Each image is scored once per method: ``input`` (the
untouched image), every checkpoint (restored in actors), every baseline folder (another method's output for the
same image, matched by name). :func:`read_work_batch` turns every work row into exactly one row: ``ok`` with the
pixels attached, or ``failed`` with the reason (hostile or missing files never end the job).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa

from fairweather.contracts.io import list_files, read_bytes
from fairweather.contracts.tables import TableStore
from fairweather.contracts.vocab import IMAGE_SUFFIXES
from fairweather.data.views import paired_view
from fairweather.imaging import ImageDecodeError, decode_image, limit_short_side
from fairweather.stages.infra.pool import list_pool

log = logging.getLogger(__name__)

#: Method name of the untouched inputs.
INPUT_METHOD = "input"
#: How a work row gets its image: the input itself, a baseline's file, or a checkpoint's restoration.
KIND_INPUT, KIND_FILE, KIND_CHECKPOINT = "input", "file", "checkpoint"

#: One row per (image, method) after the read stage. ``pixels``: ``(height, width, 3)`` uint8 RGB bytes of the
#: image to score (for a checkpoint row: the input, until the restore actor replaces it); ``target``: the clean
#: target's pixels (``target_height`` x ``target_width``), empty when the test set has none.
WORK_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("image", pa.string()),
        ("weather", pa.string()),
        ("method", pa.string()),
        ("kind", pa.string()),
        ("source_uri", pa.string()),
        ("target_uri", pa.string()),
        ("example", pa.bool_()),
        ("status", pa.string()),  # ok | failed
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("pixels", pa.binary()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("target", pa.binary()),
        ("target_height", pa.int32()),
        ("target_width", pa.int32()),
    ]
)


@dataclass
class TestSet:
    """The images of one test set: ``{"image", "weather", "input_uri", "target_uri"}`` rows sorted by image.

    image: the image's name in the set (a pair id, or the path below the folder without suffix), which is also
    what baseline outputs are matched on. not_listed: listing skips by reason (hidden, suffix, ...).
    """

    name: str
    images: list[dict]
    not_listed: dict[str, int] = field(default_factory=dict)


def _stem(path: str) -> str:
    return str(PurePosixPath(path).with_suffix(""))


def list_test_set(
    spec: str, store: TableStore, *, follow_links_out: bool = False, roots: tuple[str, ...] = ()
) -> TestSet:
    """List ``paired:<split>`` from ``store``'s paired table, or a folder / glob / manifest of images."""
    if spec.startswith("paired:"):
        view = paired_view(store, spec.partition(":")[2]).to_pylist()
        images = [
            {
                "image": row["pair_id"],
                "weather": row["weather"],
                "input_uri": row["input_uri"],
                "target_uri": row["target_uri"],
            }
            for row in view
        ]
        return TestSet(spec, images)
    listing = list_pool(spec, follow_links_out=follow_links_out, roots=roots)
    root = spec.rstrip("/")
    images = []
    for item in listing.items:
        uri = str(item["uri"])
        # Names relative to the listed folder keep rain/001 and snow/001 apart; manifests list arbitrary paths.
        name = uri[len(root) + 1 :] if uri.startswith(root + "/") else PurePosixPath(uri).name
        images.append(
            {
                "image": _stem(name),
                "weather": item["weather_hint"] or "unknown",
                "input_uri": uri,
                "target_uri": None,
            }
        )
    not_listed = {reason: len(uris) for reason, uris in listing.skipped.items()}
    if listing.bad_names:
        not_listed["name_not_utf8"] = len(listing.bad_names)
    return TestSet(PurePosixPath(root).stem or root, images, not_listed)


class BaselineOutputs:
    """Another method's restored images in a folder, matched to test images by name (suffix ignored).

    An image ``rain/001`` matches ``<folder>/rain/001.<any suffix>``, else ``<folder>/001.<any suffix>`` when
    exactly one file of the folder has that base name (methods often write their outputs flat).
    """

    def __init__(self, folder: str):
        files = list_files(folder, suffixes=IMAGE_SUFFIXES).files
        root = folder.rstrip("/")
        self.by_path = {_stem(uri[len(root) + 1 :]): uri for uri in files}
        by_base: dict[str, list[str]] = {}
        for uri in files:
            by_base.setdefault(PurePosixPath(_stem(uri)).name, []).append(uri)
        self.by_base = {base: uris[0] for base, uris in by_base.items() if len(uris) == 1}

    def match(self, image: str) -> str | None:
        # A pair id is "<dataset>/<name>": the dataset prefix is ours, not part of the method's output names.
        for name in (image, image.partition("/")[2]):
            if name in self.by_path:
                return self.by_path[name]
        return self.by_base.get(PurePosixPath(image).name)


def work_rows(
    test_sets: list[TestSet],
    checkpoints: list[str],
    baselines: dict[str, BaselineOutputs],
    *,
    include_input: bool,
    examples: int,
) -> tuple[list[dict], dict[str, list[str]]]:
    """One work row per (image, method), and per baseline the test images it has no output for.

    The first ``examples`` images of each test set are flagged for the report's grid of example restorations.
    """
    rows, unmatched = [], {name: [] for name in baselines}
    for test_set in test_sets:
        for number, image in enumerate(test_set.images):
            base = {
                "dataset": test_set.name,
                "image": image["image"],
                "weather": image["weather"],
                "target_uri": image["target_uri"],
                "example": number < examples,
            }
            if include_input:
                rows.append(
                    {**base, "method": INPUT_METHOD, "kind": KIND_INPUT, "source_uri": image["input_uri"]}
                )
            for name in checkpoints:
                rows.append(
                    {**base, "method": name, "kind": KIND_CHECKPOINT, "source_uri": image["input_uri"]}
                )
            for name, outputs in baselines.items():
                uri = outputs.match(image["image"])
                if uri is None:
                    unmatched[name].append(f"{test_set.name}:{image['image']}")
                else:
                    rows.append({**base, "method": name, "kind": KIND_FILE, "source_uri": uri})
    return rows, unmatched


def _load(uri: str, max_pixels: int, short_side: int | None) -> np.ndarray:
    rgb = decode_image(read_bytes(uri), max_pixels=max_pixels)
    return np.ascontiguousarray(limit_short_side(rgb, short_side or 0))


def read_work_one(row: dict, *, max_pixels: int, short_side: int | None) -> dict:
    """``row`` with its pixels (and its target's) attached, resized by the policy; failures become the row."""
    out = {**row, "status": "ok", "error_type": None, "message": None}
    try:
        image = _load(row["source_uri"], max_pixels, short_side)
        target = _load(row["target_uri"], max_pixels, short_side) if row["target_uri"] else None
    except (OSError, ValueError) as err:  # missing, permission, network; ImageDecodeError is a ValueError
        reason = err.reason if isinstance(err, ImageDecodeError) else type(err).__name__
        return {**out, "status": "failed", "error_type": reason, "message": str(err)}
    except Exception as err:  # PIL plugins can raise anything on hostile bytes; one file must not end the job
        return {**out, "status": "failed", "error_type": f"crash:{type(err).__name__}", "message": str(err)}
    out.update(pixels=image.tobytes(), height=image.shape[0], width=image.shape[1])
    if target is not None:
        out.update(target=target.tobytes(), target_height=target.shape[0], target_width=target.shape[1])
    return out


def read_work_batch(batch: pa.Table, *, max_pixels: int, short_side: int | None) -> pa.Table:
    """Ray Data map: work rows -> ``WORK_SCHEMA`` rows, one per input row."""
    rows = [read_work_one(row, max_pixels=max_pixels, short_side=short_side) for row in batch.to_pylist()]
    return pa.Table.from_pylist(rows, schema=WORK_SCHEMA)


def pixels_of(row: dict, column: str = "pixels") -> np.ndarray:
    """The ``(H, W, 3)`` uint8 array of a work row's ``pixels`` or ``target`` column."""
    prefix = "" if column == "pixels" else "target_"
    shape = (row[f"{prefix}height"], row[f"{prefix}width"], 3)
    return np.frombuffer(row[column], dtype=np.uint8).reshape(shape)
