"""The evaluation job's Ray Data actors: restore with checkpoints, then score with the metric scorers.

Both hold their heavy state (networks, metric models) for their whole life, so a model is loaded once per actor,
not once per batch. Scores travel as JSON (``{metric: value}``) with the seconds each metric took, so the driver
can report the cost split per metric; example rows also carry a small PNG for the report's grid.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from fairweather.contracts.config.evaluate import ScorerConfig
from fairweather.contracts.config.vlm import VLMConfig
from fairweather.data.batches import to_tensor
from fairweather.metrics import Scorer, build_scorer
from fairweather.stages.evaluate.io import KIND_CHECKPOINT, WORK_SCHEMA, pixels_of
from fairweather.training.restorer import load_restorer

log = logging.getLogger(__name__)

#: Height in pixels of the example thumbnails sent back for the report's grid.
THUMBNAIL = 160

#: One row per work row after scoring: the pixels are dropped, the scores (JSON) and timings added.
SCORED_SCHEMA = pa.schema(
    [
        WORK_SCHEMA.field(n)
        for n in (
            "dataset",
            "image",
            "weather",
            "method",
            "source_uri",
            "example",
            "status",
            "error_type",
            "message",
        )
    ]
    + [("scores", pa.string()), ("seconds", pa.string()), ("thumbnail", pa.binary())]
)


@dataclass(frozen=True)
class CheckpointRef:
    """A method to evaluate: its name, its checkpoint (folder with ``state.pt``, or a ``model.pt`` file), and the
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
        if folder.name.startswith("checkpoint_"):  # Ray Train: <storage>/<run name>/checkpoint_NNNNNN
            run = folder.parent.name
        elif (
            folder.name == "model" and folder.parent.name == "artifacts"
        ):  # MLflow: <run id>/artifacts/model/
            run = folder.parent.parent.name
        else:
            run = folder.name
        return cls(name.strip() if sep else run or folder.name, path, run)


class RestoreActor:
    """Holds every checkpoint's EMA teacher (built from the config stored in the checkpoint, tiled restore);
    replaces the pixels of ``checkpoint`` rows by their restoration. Columns beyond ``WORK_SCHEMA`` (another job's
    bookkeeping) pass through unchanged."""

    def __init__(self, checkpoints: dict[str, str], num_gpus: float, threads: int):
        torch.set_num_threads(threads)
        device = "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.restorers = {name: load_restorer(path, device=device) for name, path in checkpoints.items()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for row in rows:
            if row["kind"] != KIND_CHECKPOINT or row["status"] != "ok":
                continue
            try:
                restored = self.restorers[row["method"]].restore(pixels_of(row))
            except Exception as err:  # one image (e.g. out of memory) must not fail its neighbours
                row.update(status="failed", error_type=f"restore:{type(err).__name__}", message=str(err))
                continue
            row.update(pixels=restored.tobytes(), height=restored.shape[0], width=restored.shape[1])
        return pa.Table.from_pylist(rows, schema=batch.schema)


def _thumbnail(image: np.ndarray) -> bytes:
    height, width = image.shape[:2]
    size = (max(1, width * THUMBNAIL // height), THUMBNAIL)
    buffer = io.BytesIO()
    Image.fromarray(image).resize(size, Image.Resampling.BICUBIC).save(buffer, format="PNG")
    return buffer.getvalue()


def as_target_size(image: np.ndarray, target: np.ndarray) -> np.ndarray:
    """A baseline output of another size than its target (methods that crop or pad) resized to the target's."""
    if image.shape == target.shape:
        return image
    size = (target.shape[1], target.shape[0])
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


class ScoreActor:
    """Holds one scorer per metric; scores the ``ok`` rows of a batch, same-size images in one call per metric.

    A metric that raises on a group is retried image by image, so one unscoreable image (e.g. smaller than a
    metric's window) loses only its own value of that metric; the row's ``message`` names what failed. Columns
    beyond ``WORK_SCHEMA`` pass through to the output after the ``SCORED_SCHEMA`` ones.
    """

    def __init__(
        self,
        metrics: tuple[str, ...],
        reference_metrics: tuple[str, ...],
        scorer: ScorerConfig,
        threads: int,
        vlm: VLMConfig,
        model_cache_dir: str,
        scorer_factory: Callable[[str], Scorer] | None = None,
    ):
        """vlm, model_cache_dir: the labeling VLM that ``vlm_vis`` scores with (built where labeling builds it).
        scorer_factory: picklable ``name -> Scorer`` built in the actor instead of ``build_scorer`` (tests)."""
        torch.set_num_threads(threads)

        def make(name: str) -> Scorer:
            if scorer_factory is not None:
                return scorer_factory(name)
            return build_scorer(name, scorer, device=scorer.device, vlm=vlm, model_cache_dir=model_cache_dir)

        self.scorers = {name: make(name) for name in metrics}
        self.reference = {name: make(name) for name in reference_metrics}
        # Full-reference metrics compare pixel by pixel, so on a CPU a batch saves nothing, and pyiqa's SSIM
        # (float64 depthwise 11x11 convolutions) ran 2x slower per image in groups of 8 than one by one
        # (128 px images, 1 thread: its buffers outgrow the cache). On a GPU the group stays one call.
        self.reference_chunk = 1 if scorer.device == "cpu" else None

    def _score(self, name: str, scorer: Scorer, images: torch.Tensor, targets: torch.Tensor | None) -> list:
        try:
            return scorer(images, targets).tolist()
        except Exception:
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

    def _run(self, rows: list[dict], scorers: dict[str, Scorer], reference: bool) -> None:
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for row in rows:
            key = (row["target_height"], row["target_width"]) if reference else (row["height"], row["width"])
            groups[key].append(row)
        for group in groups.values():
            images = [pixels_of(row) for row in group]
            targets = [pixels_of(row, "target") for row in group] if reference else None
            if targets is not None:
                images = [
                    as_target_size(image, target) for image, target in zip(images, targets, strict=True)
                ]
            x, y = to_tensor(images), None if targets is None else to_tensor(targets)
            step = (self.reference_chunk if reference else None) or len(group)
            for name, scorer in scorers.items():
                start = time.perf_counter()
                values = [
                    value
                    for i in range(0, len(group), step)
                    for value in self._score(
                        name, scorer, x[i : i + step], None if y is None else y[i : i + step]
                    )
                ]
                share = (time.perf_counter() - start) / len(group)
                for row, value in zip(group, values, strict=True):
                    row["_seconds"][name] = row["_seconds"].get(name, 0.0) + share
                    if isinstance(value, Exception):
                        row["_errors"].append(f"{name}: {type(value).__name__}: {value}")
                    else:
                        row["_scores"][name] = float(value)

    def __call__(self, batch: pa.Table) -> pa.Table:
        extra = [field for field in batch.schema if field.name not in WORK_SCHEMA.names]
        schema = pa.schema(list(SCORED_SCHEMA) + extra)
        rows = batch.to_pylist()
        ok = [row for row in rows if row["status"] == "ok"]
        for row in ok:
            row.update(_scores={}, _seconds={}, _errors=[])
        self._run(ok, self.scorers, reference=False)
        self._run([row for row in ok if row["target"]], self.reference, reference=True)
        out = []
        for row in rows:
            if row["status"] == "ok":
                row.update(
                    scores=json.dumps(row["_scores"]),
                    seconds=json.dumps(row["_seconds"]),
                    message="; ".join(row["_errors"]) or None,
                    thumbnail=_thumbnail(pixels_of(row)) if row["example"] else None,
                )
            out.append({name: row.get(name) for name in schema.names})
        return pa.Table.from_pylist(out, schema=schema)
