"""``fairweather label``: rate and describe every image of the real pool with a VLM, as one Ray Data job.

Pipeline: pool URIs (driver) -> read + sha256 + decode + downscale (Ray tasks, ``label_io``) -> label batches in
actors holding the VLM backend (``label.concurrency`` actors) -> the driver streams the results into the ``labels``,
``errors`` and ``pool`` tables every ``label.flush_rows`` rows, so a crash keeps what was finished.

Every listed file ends as exactly one of: labeled, skipped (its image_id is already labeled with the same model id
and prompt versions: resume), or failed (one ``errors`` row with its URI and reason). A Python error in the backend
fails only the images it hits (a failed batch is relabeled image by image); a crashed actor is restarted and its
batch retried by Ray (``label.max_restarts`` / ``label.max_task_retries``); a batch that still fails is dropped by
Ray Data and its block's URIs are written to ``errors`` as ``lost`` by the driver, which knows every URI it listed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import ray
from matplotlib.figure import Figure

from fairweather.contracts.config import FairweatherConfig, flatten
from fairweather.contracts.config.vlm import VLMConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.contracts.schemas import WEATHER_CLASSES
from fairweather.contracts.tables import TableStore
from fairweather.tiny import resolve_model_ref
from fairweather.vlm import ImageLabel, VLMBackend, build_backend, label_images, prompt_versions

from .label_io import RESULT_SCHEMA, ResultWriter, item_pixels, list_pool, read_decode_batch
from .runtime import is_private_local, ray_session
from .tracking import open_logger

log = logging.getLogger(__name__)

#: The ``labels`` columns that, with image_id, make a label's key.
_KEY_COLUMNS = ["model_id", "rating_prompt_version", "description_prompt_version"]


@dataclass(frozen=True)
class Labeler:
    """What a label depends on besides the image: the model and the prompt versions (``labels`` key minus image_id).

    d_pos depends on the rewrite as much as on the description prompt, so the rewrite's version is part of the
    description version: changing either relabels.
    """

    model_id: str
    rating_prompt: str
    rating_prompt_version: str
    description_prompt_version: str

    @classmethod
    def of(cls, vlm: VLMConfig) -> Labeler:
        versions = prompt_versions(vlm)
        description = f"{versions['description']}+{versions['rewrite']}"
        return cls(vlm.model_id, vlm.rating_prompt, versions["rating"], description)

    def rows_of(self, labels: pa.Table) -> pa.Table:
        """The rows of a ``labels`` table made by this labeler."""
        mask = pc.and_(
            pc.equal(labels.column("model_id"), self.model_id),
            pc.and_(
                pc.equal(labels.column("rating_prompt_version"), self.rating_prompt_version),
                pc.equal(labels.column("description_prompt_version"), self.description_prompt_version),
            ),
        )
        return labels.filter(mask)


@dataclass(frozen=True)
class LabelSummary:
    listed: int
    labeled: int
    #: Images whose image_id was already labeled with the same model id and prompt versions.
    skipped_done: int
    failed: int
    seconds: float
    #: Labeled images per second of the Ray Data job (listing and tracking excluded).
    images_per_s: float
    #: The model and prompt versions the labels were made with.
    labeler: Labeler


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
    """The lazy Ray Data pipeline: URIs -> decoded items (tasks) -> labeled rows (actor pool).

    Raises FairweatherError when the actors would take every CPU of a private local Ray: the read tasks could then
    never be scheduled and the job would hang instead of failing. (A remote cluster may autoscale, so it is trusted.)
    """
    job = cfg.label
    cpus, actor_cpus = ray.cluster_resources().get("CPU", 0.0), job.concurrency * job.num_cpus_per_actor
    if is_private_local(cfg.runtime) and actor_cpus + 1 > cpus:
        raise FairweatherError(
            f"label.concurrency x label.num_cpus_per_actor = {actor_cpus:g} CPUs leaves less than 1 of the cluster's "
            f"{cpus:g} CPUs for reading and decoding images; lower one of them (fractions are fine) or add CPUs"
        )
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / job.read_block_rows)))
    ds = ds.map_batches(
        read_decode_batch,
        batch_format="pyarrow",
        fn_kwargs={"max_pixels": cfg.data.max_image_pixels, "short_side": job.image_short_side, "done": done},
    )
    ds = ds.map_batches(
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
        # Ray 2.60 has no named parameters for these two yet (they pass as ray_remote_args, with a warning).
        max_restarts=job.max_restarts,
        max_task_retries=job.max_task_retries,
    )
    # A block whose actor keeps crashing past its retries is dropped instead of failing the job; the driver
    # accounts for its URIs (see ResultWriter.add_lost).
    ds.context.max_errored_blocks = -1
    return ds


def plot_r_vlm(labels: pa.Table, path: Path) -> Path:
    """Histogram of r_vlm per weather class (the folder/manifest hint, else the VLM's own class) -> PNG."""
    hints, parsed = labels.column("weather_hint").to_pylist(), labels.column("weather").to_pylist()
    classes = [hint or weather for hint, weather in zip(hints, parsed, strict=True)]
    values = labels.column("r_vlm").to_pylist()
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    bins = [1 + 0.2 * i for i in range(21)]
    for name in [c for c in WEATHER_CLASSES if c in classes] + sorted(set(classes) - set(WEATHER_CLASSES)):
        chosen = [v for v, c in zip(values, classes, strict=True) if c == name and math.isfinite(v)]
        ax.hist(chosen, bins=bins, alpha=0.5, label=f"{name} (n={len(chosen)})")
    ax.set(xlabel="r_vlm (1 = bad, 5 = excellent)", ylabel="images", title="VLM rating per weather class")
    if classes:
        ax.legend()
    fig.savefig(path)
    return path


def run_label(
    cfg: FairweatherConfig,
    logger: MetricLogger | None = None,
    *,
    backend_factory: Callable[[], VLMBackend] | None = None,
) -> LabelSummary:
    """Label every image of ``cfg.data.pool`` not yet labeled with ``cfg.vlm``; write the tables; return counts.

    logger: the tracking run to log into (default: a new MLflow run via ``open_logger``, closed here).
    backend_factory: picklable zero-argument callable that builds the backend inside each actor (tests and
    benchmarks); default ``build_backend`` on ``cfg.vlm.model_id`` resolved under ``cfg.runtime.model_cache_dir``.
    """
    items = list_pool(cfg.data.pool)  # raises PoolError before any run is opened
    own_logger = logger is None
    if logger is None:
        logger = open_logger(cfg, f"label-{time.strftime('%Y%m%d-%H%M%S')}", stage="label")
    else:
        logger.log_params(flatten(cfg))
    try:
        summary = _label_pool(cfg, items, logger, backend_factory)
    except BaseException:
        if own_logger:
            logger.close("FAILED")
        raise
    if own_logger:
        logger.close()
    print(
        f"label: {summary.listed} listed, {summary.labeled} labeled, {summary.skipped_done} skipped (already done), "
        f"{summary.failed} failed in {summary.seconds:.1f}s ({summary.images_per_s:.2f} images/s)"
    )
    return summary


def _label_pool(
    cfg: FairweatherConfig,
    items: list[dict],
    logger: MetricLogger,
    backend_factory: Callable[[], VLMBackend] | None,
) -> LabelSummary:
    """Run the Ray Data job over ``items``, write the tables, log counts, throughput and the r_vlm plot."""
    store = TableStore(cfg.data.tables)
    labeler = Labeler.of(cfg.vlm)
    logger.log_params({f"labeler.{k}": v for k, v in dataclasses.asdict(labeler).items()})
    labeled_before = labeler.rows_of(store.read("labels", [*_KEY_COLUMNS, "image_id"]))
    done = frozenset(labeled_before.column("image_id").to_pylist())
    writer = ResultWriter(store, dataclasses.asdict(labeler), cfg.label.flush_rows)
    try:
        with ray_session(cfg):
            start = time.perf_counter()
            batches = label_dataset(cfg, items, done, backend_factory).iter_batches(
                batch_size=None, batch_format="pyarrow"
            )
            for batch in batches:
                writer.add(batch)
            seconds = time.perf_counter() - start
        lost = [str(item["uri"]) for item in items if item["uri"] not in writer.seen]
        writer.add_lost(
            lost, f"its block still failed after {cfg.label.max_task_retries} Ray retries (crashing actor)"
        )
    finally:
        writer.flush()  # keep every finished row, even when the job dies
    counts = writer.counts
    summary = LabelSummary(
        listed=len(items),
        labeled=counts["labeled"],
        skipped_done=counts["skipped"],
        failed=counts["failed"],
        seconds=round(seconds, 3),
        images_per_s=round(counts["labeled"] / seconds, 3),
        labeler=labeler,
    )
    if summary.labeled + summary.skipped_done + summary.failed != summary.listed:
        raise RuntimeError(
            f"label: outcome counts do not add up to the {summary.listed} listed files: {summary}"
        )
    logger.log_metrics({k: v for k, v in dataclasses.asdict(summary).items() if isinstance(v, int | float)})
    with tempfile.TemporaryDirectory() as folder:
        labels = labeler.rows_of(store.read("labels", [*_KEY_COLUMNS, "r_vlm", "weather", "weather_hint"]))
        logger.log_artifact(plot_r_vlm(labels, Path(folder) / "r_vlm_by_weather.png"), "label")
    return summary
