"""``fairweather label``: rate and describe every image of the real pool with a VLM, as one Ray Data job.

Pipeline (:mod:`fairweather.stages.label.actors`): pool URIs (driver) -> read + sha256 + decode + downscale (Ray
tasks) -> label batches in actors holding the VLM backend (``label.concurrency`` actors) -> the driver streams the
results into the ``pool``, ``labels`` and ``errors`` tables every ``label.flush_rows`` rows or
``label.flush_seconds`` (:mod:`fairweather.stages.label.tables`), so a crash keeps what was finished; the job ends
by compacting and checking the tables.

Every listed file ends as exactly one of: labeled, skipped (its image_id is already labeled by the same labeler
fingerprint: resume), or failed (one ``errors`` row with its URI and reason). A Python error in the backend
fails only the images it hits (a failed batch is relabeled image by image); a crashed actor is restarted and its
batch retried by Ray (``label.max_restarts`` / ``label.max_task_retries``); a batch that still fails is dropped by
Ray Data and its block's URIs are written to ``errors`` as ``lost`` by the driver, which knows every URI it listed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from fairweather.contracts.config import FairweatherConfig, flatten
from fairweather.contracts.config.vlm import VLMConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.contracts.tables import TableStore
from fairweather.stages.infra import cpus
from fairweather.stages.infra.console import progress, say
from fairweather.stages.infra.pool import (
    PoolListing,
    list_pool,
)
from fairweather.stages.infra.preflight import check_weights
from fairweather.stages.infra.runtime import check_output_locations, ray_session
from fairweather.stages.infra.tracking import stage_run
from fairweather.stages.label.actors import label_dataset
from fairweather.stages.label.report import log_label_report
from fairweather.stages.label.tables import ResultWriter, done_image_ids, finish_tables
from fairweather.vlm import VLMBackend, prompt_versions

log = logging.getLogger(__name__)


class NothingLabeledError(FairweatherError):
    """Every listed file failed: the run is recorded, but the command must not look like a success."""


@dataclass(frozen=True)
class Labeler:
    """Everything a label depends on besides the image, and its fingerprint (``labels`` key with image_id).

    d_pos depends on the rewrite as much as on the description prompt, so the rewrite's version is part of the
    description version. The fingerprint also covers the engine, dtype, generation length and the pixels the model
    sees (``label.image_short_side``): changing any of them relabels instead of keeping stale labels.
    """

    model_id: str
    rating_prompt: str
    rating_prompt_version: str
    description_prompt_version: str
    #: Sorted JSON of every setting above plus the generation and preprocessing settings.
    labeler_settings: str
    #: sha256 (hex, first 16) of ``labeler_settings``.
    labeler_fingerprint: str

    @classmethod
    def of(cls, cfg: FairweatherConfig) -> Labeler:
        vlm: VLMConfig = cfg.vlm
        versions = prompt_versions(vlm)
        description = f"{versions['description']}+{versions['rewrite']}"
        settings = {
            "model_id": vlm.model_id,
            "rating_prompt": vlm.rating_prompt,
            "rating_prompt_version": versions["rating"],
            "description_prompt_version": description,
            "backend": vlm.backend,
            "dtype": vlm.dtype,
            "max_new_tokens": vlm.max_new_tokens,
            "image_short_side": cfg.label.image_short_side,
        }
        text = json.dumps(settings, sort_keys=True)
        fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
        return cls(vlm.model_id, vlm.rating_prompt, versions["rating"], description, text, fingerprint)

    def rows_of(self, labels: pa.Table) -> pa.Table:
        """The rows of a ``labels`` table made by this labeler."""
        return labels.filter(pc.equal(labels.column("labeler_fingerprint"), self.labeler_fingerprint))


@dataclass(frozen=True)
class LabelSummary:
    listed: int
    labeled: int
    #: Images whose image_id was already labeled with the same labeler fingerprint.
    skipped_done: int
    failed: int
    #: Entries the listing did not take (hidden, wrong suffix, dangling or outside links, ...), by reason.
    not_listed: dict[str, int]
    seconds: float
    #: Labeled images per second of the Ray Data job (listing and tracking excluded).
    images_per_s: float
    #: The model and prompt versions the labels were made with.
    labeler: Labeler


def check_cpu_budget(cfg: FairweatherConfig) -> None:
    """Refuse, before Ray starts, actors that would take every CPU of a private local Ray (the read tasks could
    then never be scheduled and the job would hang instead of failing)."""
    cpus.check_cpu_budget(
        cfg.runtime,
        cfg.label.concurrency * cfg.label.num_cpus_per_actor,
        "label.concurrency x label.num_cpus_per_actor",
    )


def run_label(
    cfg: FairweatherConfig,
    logger: MetricLogger | None = None,
    *,
    backend_factory: Callable[[], VLMBackend] | None = None,
) -> LabelSummary:
    """Label every image of ``cfg.data.pool`` not yet labeled by this labeler; write the tables; return counts.

    Every check that can fail without labeling anything (pool listing, writable output locations, the CPU
    budget, the VLM's weights on this machine) runs before a tracking run is opened or Ray is started. Raises :class:`NothingLabeledError` (after
    writing the tables and closing the run FAILED) when every listed file failed.

    logger: the tracking run to log into (default: a new MLflow run via ``stage_run``, closed here).
    backend_factory: picklable zero-argument callable that builds the backend inside each actor (tests and
    benchmarks); default ``build_backend`` on ``cfg.vlm.model_id`` resolved under ``cfg.runtime.model_cache_dir``.
    """
    listing = list_pool(cfg.data.pool, follow_links_out=cfg.data.follow_links_out, roots=cfg.data.roots)
    check_output_locations(cfg)
    check_cpu_budget(cfg)
    if backend_factory is None:  # the default backend loads cfg.vlm.model_id: is it on this machine?
        check_weights(cfg, "label")
    if logger is None:
        with stage_run(cfg, "label") as run:
            summary = _label_pool(cfg, listing, run, backend_factory)
    else:
        logger.log_params(flatten(cfg))
        summary = _label_pool(cfg, listing, logger, backend_factory)
    say(
        f"label: {listing.summary()}; {summary.labeled} labeled, {summary.skipped_done} skipped (already done), "
        f"{summary.failed} failed in {summary.seconds:.1f}s ({summary.images_per_s:.2f} images/s)"
    )
    return summary


def _label_pool(
    cfg: FairweatherConfig,
    listing: PoolListing,
    logger: MetricLogger,
    backend_factory: Callable[[], VLMBackend] | None,
) -> LabelSummary:
    """Run the Ray Data job over the listing, write and check the tables, log counts, failures and ratings."""
    store = TableStore(cfg.data.tables)
    labeler = Labeler.of(cfg)
    logger.log_params({f"labeler.{k}": v for k, v in dataclasses.asdict(labeler).items()})
    done = done_image_ids(store, labeler.labeler_fingerprint)
    started, items = datetime.now(timezone.utc), listing.items
    writer = ResultWriter(store, dataclasses.asdict(labeler), cfg.label.flush_rows, cfg.label.flush_seconds)
    with writer:
        writer.add_failures(listing.bad_names, "list", "bad_name", "file name is not UTF-8 (shown escaped)")
        with ray_session(cfg):
            start = time.perf_counter()
            batches = label_dataset(cfg, items, done, backend_factory).iter_batches(
                batch_size=None, batch_format="pyarrow"
            )
            with progress(len(items), "label", unit="image") as bar:
                for batch in batches:
                    writer.add(batch)
                    bar.update(batch.num_rows)
            seconds = time.perf_counter() - start
        lost = [str(item["uri"]) for item in items if item["uri"] not in writer.outcomes]
        reason = f"its block still failed after {cfg.label.max_task_retries} Ray retries (crashing actor)"
        writer.add_failures(lost, "label", "lost", reason)
    finish_tables(store, writer, labeler.labeler_fingerprint, started)
    counts = writer.counts
    summary = LabelSummary(
        listed=listing.listed,
        labeled=counts["labeled"],
        skipped_done=counts["skipped"],
        failed=counts["failed"],
        not_listed={reason: len(uris) for reason, uris in listing.skipped.items()},
        seconds=round(seconds, 3),
        images_per_s=round(counts["labeled"] / seconds, 3),
        labeler=labeler,
    )
    if summary.labeled + summary.skipped_done + summary.failed != summary.listed:
        raise RuntimeError(
            f"label: outcome counts do not add up to the {summary.listed} listed files: {summary}"
        )
    logger.log_metrics({k: v for k, v in dataclasses.asdict(summary).items() if isinstance(v, int | float)})
    labels = labeler.rows_of(store.read("labels"))
    log_label_report(logger, labels, writer.failures, writer.failures_by_reason(), listing.skipped)
    if summary.listed and summary.failed == summary.listed:
        reasons = ", ".join(f"{n} {k}" for k, n in writer.failures_by_reason().most_common(3))
        raise NothingLabeledError(
            f"label: every one of the {summary.listed} listed files failed ({reasons}); "
            f"the reasons are in the errors table under {cfg.data.tables}"
        )
    return summary
