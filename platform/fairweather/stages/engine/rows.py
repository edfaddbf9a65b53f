"""The engine's row: one (image, source) to restore and score, with fields that mean what they say.

A work row (:func:`work_row`, listed by the caller on the driver) names what to read; :func:`read_one` turns it into
exactly one :data:`ROW_SCHEMA` row: ``ok`` with the pixels attached, or ``failed`` with the reason (hostile or
missing files never end a job). Everything here is plain Python (no Ray): the pipeline's read tasks and the
in-process path (:func:`fairweather.stages.engine.score.restore_and_score_here`) call the same functions.

Fields of a work row:

- ``group``: the caller's grouping (evaluation: the test set; pseudo-labelling: the lineage).
- ``image``: the image's name within the group (a pair id, a path below a folder, a pool ``image_id``).
- ``weather``: the image's weather (``unknown`` when not known).
- ``source``: what produced the candidate: ``input`` (the untouched image), a checkpoint's name, a folder's name.
- ``kind``: how its pixels come about: ``input`` (the image itself), ``checkpoint`` (restored by the
  ``source`` checkpoint in the restore actors), ``file`` (another method's output, read from ``source_uri``).
- ``source_uri``: the file read: the input (``input`` and ``checkpoint`` rows) or the method's output (``file``).
- ``target_uri``: the clean ground truth, for full-reference metrics; None without one.
- ``input_uri``: the degraded input this candidate restores (its size, input-relative checks); None for the input
  itself.
- ``example``: the caller wants a thumbnail of the scored image (the evaluation report's grid).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
from PIL import Image

from fairweather.contracts.io import list_files, read_bytes
from fairweather.contracts.vocab import IMAGE_SUFFIXES
from fairweather.imaging import ImageDecodeError, decode_image, limit_short_side
from fairweather.training.checkpoint_file import CHECKPOINT_PREFIX

#: Source name of the untouched input.
INPUT_SOURCE = "input"
#: How a row gets its image: the input itself, a checkpoint's restoration, or another method's file.
KIND_INPUT, KIND_CHECKPOINT, KIND_FILE = "input", "checkpoint", "file"
KINDS = (KIND_INPUT, KIND_CHECKPOINT, KIND_FILE)

#: The fields of a work row, in order (see the module docstring).
WORK_FIELDS = (
    "group",
    "image",
    "weather",
    "source",
    "kind",
    "source_uri",
    "target_uri",
    "input_uri",
    "example",
)
#: One row per work row after the read step (and after the restore step, which fills ``restore_seconds``).
#: Pixel columns hold ``(height, width, 3)`` uint8 RGB bytes: ``pixels`` the image to score (a checkpoint row holds
#: its input until the restore step replaces it); ``target`` the clean target, empty without one; ``input`` the
#: degraded input, only when the caller asks for inputs (never for ``input`` rows).
ROW_SCHEMA = pa.schema(
    [
        ("group", pa.string()),
        ("image", pa.string()),
        ("weather", pa.string()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("source_uri", pa.string()),
        ("target_uri", pa.string()),
        ("input_uri", pa.string()),
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
        ("input", pa.binary()),
        ("input_height", pa.int32()),
        ("input_width", pa.int32()),
        ("restore_seconds", pa.float64()),
    ]
)


def work_row(
    *,
    group: str,
    image: str,
    weather: str,
    source: str,
    kind: str,
    source_uri: str,
    target_uri: str | None = None,
    input_uri: str | None = None,
    example: bool = False,
) -> dict:
    """A work row; a ``checkpoint`` row restores its ``source_uri``, so that is its input unless given."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == KIND_CHECKPOINT and input_uri is None:
        input_uri = source_uri
    if kind == KIND_INPUT and input_uri is not None:
        raise ValueError("an input row is its own input: input_uri must be None")
    return {
        "group": group,
        "image": image,
        "weather": weather,
        "source": source,
        "kind": kind,
        "source_uri": source_uri,
        "target_uri": target_uri,
        "input_uri": input_uri,
        "example": example,
    }


def _load(uri: str, max_pixels: int, short_side: int | None) -> np.ndarray:
    rgb = decode_image(read_bytes(uri), max_pixels=max_pixels)
    return np.ascontiguousarray(limit_short_side(rgb, short_side or 0))


def _attach(row: dict, column: str, image: np.ndarray) -> None:
    prefix = "" if column == "pixels" else f"{column}_"
    row.update({column: image.tobytes(), f"{prefix}height": image.shape[0], f"{prefix}width": image.shape[1]})


def read_one(row: dict, *, max_pixels: int, short_side: int | None, with_input: bool = False) -> dict:
    """``row`` with its pixels (and its target's) attached, resized by the policy; failures become the row.

    with_input: also attach the degraded input of a ``file`` row (a ``checkpoint`` row's input is its pixels
    before restoring: the restore step keeps them, see :func:`fairweather.stages.engine.score.restore_one`).
    """
    out = {**dict.fromkeys(ROW_SCHEMA.names), **row, "status": "ok", "error_type": None, "message": None}
    try:
        image = _load(row["source_uri"], max_pixels, short_side)
        target = _load(row["target_uri"], max_pixels, short_side) if row["target_uri"] else None
        read_input = with_input and row["input_uri"] and row["input_uri"] != row["source_uri"]
        degraded = _load(row["input_uri"], max_pixels, short_side) if read_input else None
    except (OSError, ValueError) as err:  # missing, permission, network; ImageDecodeError is a ValueError
        reason = err.reason if isinstance(err, ImageDecodeError) else type(err).__name__
        return {**out, "status": "failed", "error_type": reason, "message": str(err)}
    except Exception as err:  # PIL plugins can raise anything on hostile bytes; one file must not end the job
        return {**out, "status": "failed", "error_type": f"crash:{type(err).__name__}", "message": str(err)}
    _attach(out, "pixels", image)
    for column, array in (("target", target), ("input", degraded)):
        if array is not None:
            _attach(out, column, array)
    return out


def read_batch(
    batch: pa.Table, *, max_pixels: int, short_side: int | None, with_input: bool = False
) -> pa.Table:
    """Ray Data map: work rows -> :data:`ROW_SCHEMA` rows, one per input row."""
    rows = [
        read_one(row, max_pixels=max_pixels, short_side=short_side, with_input=with_input)
        for row in batch.to_pylist()
    ]
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def read_rows(batch: pa.Table, **kwargs) -> Iterator[pa.Table]:
    """Ray Data map of the pipeline's read tasks: :func:`read_batch` one work row at a time, each yielded as soon
    as it is read (a task never holds more than one decoded row)."""
    for index in range(batch.num_rows):
        yield read_batch(batch.slice(index, 1), **kwargs)


def pixels_of(row: dict, column: str = "pixels") -> np.ndarray:
    """The ``(H, W, 3)`` uint8 array of a row's ``pixels``, ``target`` or ``input`` column."""
    prefix = "" if column == "pixels" else f"{column}_"
    shape = (row[f"{prefix}height"], row[f"{prefix}width"], 3)
    return np.frombuffer(row[column], dtype=np.uint8).reshape(shape)


def resize_to(image: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``image`` at ``like``'s size (bicubic): another method's output that crops or pads, against its target or
    its input. Unchanged when the sizes already agree."""
    if image.shape == like.shape:
        return image
    size = (like.shape[1], like.shape[0])
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


def _stem(path: str) -> str:
    return str(PurePosixPath(path).with_suffix(""))


class OutputFolder:
    """Another method's restored images in a folder, matched to images by name (suffix ignored).

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


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint source: its name, its checkpoint (folder with ``state.pt``, or a ``model.pt`` file), and the
    training run it came from: the Ray Train run name of ``<run name>/checkpoint_NNNNNN``, the MLflow run id of
    ``<run id>/artifacts/model/model.pt``, else the folder's name."""

    name: str
    path: str
    training_run: str

    @classmethod
    def parse(cls, entry: str) -> CheckpointRef:
        """``name=path`` or ``path`` (named after its training run, else its folder or file)."""
        name, sep, path = entry.partition("=")
        path = path if sep else entry
        pure = PurePosixPath(path.rstrip("/"))
        folder = pure.parent if pure.suffix == ".pt" else pure
        # Ray Train: <storage>/<run name>/checkpoint_<date>_<time>
        if folder.name.startswith(CHECKPOINT_PREFIX):
            run = folder.parent.name
        elif (
            folder.name == "model" and folder.parent.name == "artifacts"
        ):  # MLflow: <run id>/artifacts/model/
            run = folder.parent.parent.name
        else:
            run = folder.name
        return cls(name.strip() if sep else run or folder.name, path, run)
