"""The engine's restore and score steps as plain functions (torch: they run in the actors; what a driver reads of
their output, the scored schema and the means, is :mod:`~fairweather.stages.engine.scored`).

The restore and score actors (:mod:`fairweather.stages.engine.actors`) call :func:`restore_one` and
:func:`score_rows` on each batch; :func:`restore_and_score_here` calls the same functions in this process (the
final test table of ``fairweather train``), so a number never depends on which path computed it.

Full-reference metrics score one image per call: a score never depends on its batch neighbours (a GPU may pick
another convolution algorithm for another batch size). No-reference metrics score same-size images together (one
call per group; a metric that raises on a group is retried image by image, so one unscoreable image, e.g. smaller
than the metric's window, loses only its own value, and the row's ``message`` names what failed). Tiled metrics
(PSNR, SSIM, PIQE: :mod:`fairweather.metrics.tiled`) score each row's uint8 pixels directly, tile by tile, so a
big photo costs its own bytes plus one tile, never a float copy of it; the float batch of a size group is built only
for metrics that need the whole image as a tensor.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from fairweather.data.batches import to_tensor
from fairweather.metrics import Scorer
from fairweather.stages.engine.rows import KIND_CHECKPOINT, ROW_SCHEMA, pixels_of, read_one, resize_to
from fairweather.stages.engine.scored import SCORED_SCHEMA, InputChecks

log = logging.getLogger(__name__)

#: Height in pixels of the example thumbnails (the evaluation report's grid).
THUMBNAIL = 160


class Restores(Protocol):
    """A loaded restorer (:class:`fairweather.training.restorer.Restorer`)."""

    def restore(self, rgb: np.ndarray, weather: str | None = None) -> np.ndarray: ...


def restore_one(row: dict, restorers: Mapping[str, Restores], *, keep_input: bool) -> None:
    """Replace an ``ok`` checkpoint row's pixels by their restoration (and time it); a failure becomes the row.

    keep_input: keep the pixels before restoring as the row's ``input``.
    """
    if row["kind"] != KIND_CHECKPOINT or row["status"] != "ok":
        return
    start = time.perf_counter()
    try:
        restored = restorers[row["source"]].restore(pixels_of(row), row["weather"])
    except Exception as err:  # one image (e.g. out of memory) must not fail its neighbours
        row.update(status="failed", error_type=f"restore:{type(err).__name__}", message=str(err))
        return
    if keep_input:
        row.update(input=row["pixels"], input_height=row["height"], input_width=row["width"])
    row.update(
        pixels=restored,  # the (H, W, 3) uint8 array itself: pixels_of reads it, the actors wrap it without a copy
        height=restored.shape[0],
        width=restored.shape[1],
        restore_seconds=time.perf_counter() - start,
    )


def thumbnail(image: np.ndarray) -> bytes:
    """PNG of ``image`` scaled to :data:`THUMBNAIL` pixels high (a big photo is first subsampled to at least 4x
    that, so no full-size copy of it is made)."""
    height, width = image.shape[:2]
    size = (max(1, width * THUMBNAIL // height), THUMBNAIL)
    step = max(1, height // (4 * THUMBNAIL))
    image = np.ascontiguousarray(image[::step, ::step]) if step > 1 else image
    buffer = io.BytesIO()
    Image.fromarray(image).resize(size, Image.Resampling.BICUBIC).save(buffer, format="PNG")
    return buffer.getvalue()


def _call(name: str, scorer: Scorer, images: torch.Tensor, targets: torch.Tensor | None) -> list:
    """Values of ``scorer`` on a group; on an error, image by image (an image's exception stands for its value)."""
    try:
        return scorer(images, targets).tolist()
    except Exception:
        if len(images) > 1:
            log.warning(
                "metric %s failed on a group of %d images; scoring them one by one", name, len(images)
            )
    values = []
    for i in range(len(images)):
        try:
            values.append(
                float(scorer(images[i : i + 1], None if targets is None else targets[i : i + 1])[0])
            )
        except Exception as err:  # this image's value of this metric is lost, nothing else
            values.append(err)
    return values


def _record(rows: Sequence[dict], name: str, values: list, seconds: float) -> None:
    share = seconds / len(rows)
    for row, value in zip(rows, values, strict=True):
        row["_seconds"][name] = row["_seconds"].get(name, 0.0) + share
        if isinstance(value, Exception):
            row["_errors"].append(f"{name}: {type(value).__name__}: {value}")
        else:
            row["_scores"][name] = float(value)


def _tiled(scorer: Scorer) -> bool:
    """A scorer that scores an ``(H, W, 3)`` uint8 image itself, tile by tile (:mod:`fairweather.metrics.tiled`)."""
    return hasattr(scorer, "score_uint8")


def _score_uint8(rows: Sequence[dict], name: str, scorer: Scorer, reference: bool) -> None:
    """One row at a time, on the row's own uint8 pixels (no float copy of the image)."""
    for row in rows:
        start = time.perf_counter()
        try:
            if reference:
                target = pixels_of(row, "target")
                value = scorer.score_uint8(resize_to(pixels_of(row), target), target)
            else:
                value = scorer.score_uint8(pixels_of(row))
        except Exception as err:  # this image's value of this metric is lost, nothing else
            value = err
        _record([row], name, [value], time.perf_counter() - start)


def _score_no_reference(rows: list[dict], scorers: Mapping[str, Scorer]) -> None:
    whole = {name: scorer for name, scorer in scorers.items() if not _tiled(scorer)}
    for name, scorer in scorers.items():
        if name not in whole:
            _score_uint8(rows, name, scorer, reference=False)
    if not whole:
        return
    groups: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["height"], row["width"])].append(row)
    for group in groups.values():  # one size group's float batch at a time
        x = to_tensor([pixels_of(row) for row in group])
        for name, scorer in whole.items():
            start = time.perf_counter()
            values = _call(name, scorer, x, None)
            _record(group, name, values, time.perf_counter() - start)


def _score_reference(rows: list[dict], scorers: Mapping[str, Scorer]) -> None:
    whole = {name: scorer for name, scorer in scorers.items() if not _tiled(scorer)}
    for row in rows:
        x = y = None
        for name, scorer in scorers.items():
            if name not in whole:
                _score_uint8([row], name, scorer, reference=True)
                continue
            if x is None:
                target = pixels_of(row, "target")
                x, y = to_tensor([resize_to(pixels_of(row), target)]), to_tensor([target])
            start = time.perf_counter()
            values = _call(name, scorer, x, y)
            _record([row], name, values, time.perf_counter() - start)


def _check_inputs(rows: list[dict], input_checks: InputChecks) -> None:
    for row in rows:
        start = time.perf_counter()
        degraded = pixels_of(row, "input")
        try:
            values = input_checks(resize_to(pixels_of(row), degraded), degraded)
            row["_scores"].update({name: float(value) for name, value in values.items()})
        except Exception as err:  # the checks' values are lost for this row only
            row["_errors"].append(f"input_checks: {type(err).__name__}: {err}")
        seconds = time.perf_counter() - start
        row["_seconds"]["input_checks"] = row["_seconds"].get("input_checks", 0.0) + seconds


def score_rows(
    rows: list[dict],
    scorers: Mapping[str, Scorer],
    reference: Mapping[str, Scorer],
    *,
    input_checks: InputChecks | None = None,
) -> list[dict]:
    """Every row in its scored form (:data:`SCORED_SCHEMA` columns, then the row's columns beyond
    :data:`ROW_SCHEMA`), in order; failed rows pass through unscored.

    scorers: no-reference metrics, on every ``ok`` row. reference: full-reference metrics, on the rows with a
    target (the image resized to the target's size when they differ). input_checks: on the rows with an input.
    """
    if not rows:
        return []
    ok = [row for row in rows if row["status"] == "ok"]
    for row in ok:
        row.update(_scores={}, _seconds={}, _errors=[])
    _score_no_reference(ok, scorers)
    _score_reference([row for row in ok if row["target"]], reference)
    if input_checks is not None:
        _check_inputs([row for row in ok if row["input"]], input_checks)
    names = SCORED_SCHEMA.names + [
        name for name in rows[0] if name not in ROW_SCHEMA.names and name[0] != "_"
    ]
    out = []
    for row in rows:
        if row["status"] == "ok":
            row.update(
                scores=json.dumps(row["_scores"]),
                seconds=json.dumps(row["_seconds"]),
                message="; ".join(row["_errors"]) or None,
                thumbnail=thumbnail(pixels_of(row)) if row["example"] else None,
                target_thumbnail=thumbnail(pixels_of(row, "target"))
                if row["example"] and row["target"]
                else None,
            )
        out.append({name: row.get(name) for name in names})
    return out


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Torch's intra-op threads set to ``count`` inside the block (None: unchanged): a reduction over a large image
    splits across threads, so the last digits of a score follow the thread count."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def restore_and_score_here(
    rows: Iterable[dict],
    *,
    restorers: Mapping[str, Restores],
    scorers: Mapping[str, Scorer],
    reference: Mapping[str, Scorer],
    max_pixels: int,
    short_side: int | None,
    input_checks: InputChecks | None = None,
    chunk: int = 8,
    score_threads: int | None = None,
) -> list[dict]:
    """The pipeline's read -> restore -> score steps in this process, ``chunk`` rows at a time (only those rows'
    pixels are held); the scored rows, in order.

    score_threads: torch threads while scoring (the score actors' count, for the same digits); restoring keeps this
    process's count.
    """
    rows, out = list(rows), []
    with_input = input_checks is not None
    for start in range(0, len(rows), chunk):
        part = [
            read_one(row, max_pixels=max_pixels, short_side=short_side, with_input=with_input)
            for row in rows[start : start + chunk]
        ]
        for row in part:
            restore_one(row, restorers, keep_input=with_input)
        with torch_threads(score_threads):
            out += score_rows(part, scorers, reference, input_checks=input_checks)
    return out
