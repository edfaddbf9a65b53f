"""The label job's Ray Data pipeline: pool URIs -> decoded items (Ray tasks) -> labeled rows (an actor pool, each
actor holding one VLM backend).

Apart from :mod:`fairweather.stages.label.driver` because every actor process imports the module of its class: this
one imports what labeling needs (the VLM, the pool's decoding) and not the driver's MLflow, tables and report.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable

import pyarrow as pa
import ray
from ray.util.annotations import RayDeprecationWarning

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.config.vlm import VLMConfig
from fairweather.stages.infra.pool import RESULT_SCHEMA, item_pixels, read_decode_batch
from fairweather.tiny import resolve_model_ref
from fairweather.vlm import ImageLabel, VLMBackend, build_backend, label_images

log = logging.getLogger(__name__)


def _label_fields(label: ImageLabel) -> dict:
    rating = label.rating
    return {"probs": list(rating.probs), "rating_complete": rating.complete, "r_vlm": rating.r_vlm,
            "vlm_vis": rating.vlm_vis, "description": label.description, "d_pos": label.d_pos, "weather": label.weather}  # fmt: skip


class LabelActor:
    """Ray Data actor: holds one VLM backend and labels ``ITEM_SCHEMA`` batches into ``RESULT_SCHEMA`` rows."""

    def __init__(
        self, vlm: VLMConfig, cache_dir: str, backend_factory: Callable[[], VLMBackend] | None
    ) -> None:
        self.vlm = vlm
        if backend_factory is not None:
            self.backend = backend_factory()
        else:
            self.backend = build_backend(vlm, resolve_model_ref(vlm.model_id, cache_dir))

    def _label(self, rows: list[dict]) -> list[dict | Exception]:
        """Label fields per row, or the exception that row hit."""
        images = [item_pixels(row) for row in rows]
        try:
            labels: list = label_images(self.backend, images, self.vlm)
        except Exception:
            # One bad image (or a flaky engine call) should not fail its neighbours: retry image by image.
            log.warning("a batch of %d failed; labeling its images one by one", len(rows), exc_info=True)
            labels = []
            for image in images:
                try:
                    labels.append(label_images(self.backend, [image], self.vlm)[0])
                except Exception as err:  # any backend failure becomes this image's error row
                    labels.append(err)
        return [label if isinstance(label, Exception) else _label_fields(label) for label in labels]

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        todo = [row for row in rows if row["status"] == "ok"]
        for row, result in zip(todo, self._label(todo) if todo else [], strict=True):
            if isinstance(result, Exception):
                row.update(
                    status="failed",
                    error_stage="label",
                    error_type=type(result).__name__,
                    message=str(result),
                )
            else:
                row.update(status="labeled", **result)
        return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def label_dataset(
    cfg: FairweatherConfig,
    items: list[dict],
    done: frozenset[str],
    backend_factory: Callable[[], VLMBackend] | None,
) -> ray.data.Dataset:
    """The lazy Ray Data pipeline: URIs -> decoded items (tasks) -> labeled rows (actor pool)."""
    job = cfg.label
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / job.read_block_rows)))
    ds = ds.map_batches(
        read_decode_batch,
        batch_format="pyarrow",
        fn_kwargs={"max_pixels": cfg.data.max_image_pixels, "short_side": job.image_short_side, "done": done},
    )
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameters for max_restarts / max_task_retries, so they can only pass as
        # ray_remote_args; its deprecation warning about that is noise every run printed, not actionable here.
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", RayDeprecationWarning)
        ds = _label_actors(ds, cfg, backend_factory)
    # A block whose actor keeps crashing past its retries is dropped instead of failing the job; the driver
    # accounts for its URIs (``lost`` rows, see _label_pool).
    ds.context.max_errored_blocks = -1
    return ds


def _label_actors(
    ds: ray.data.Dataset, cfg: FairweatherConfig, backend_factory: Callable[[], VLMBackend] | None
) -> ray.data.Dataset:
    job = cfg.label
    return ds.map_batches(
        LabelActor,
        fn_constructor_kwargs={
            "vlm": cfg.vlm,
            "cache_dir": cfg.runtime.model_cache_dir,
            "backend_factory": backend_factory,
        },
        batch_size=job.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=job.concurrency),
        num_cpus=job.num_cpus_per_actor,
        num_gpus=job.num_gpus_per_actor,
        accelerator_type=job.accelerator_type,
        # Ray 2.60 has no named parameters for these two (they pass as ray_remote_args; see label_dataset).
        max_restarts=job.max_restarts,
        max_task_retries=job.max_task_retries,
    )
