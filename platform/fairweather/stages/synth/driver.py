"""``fairweather synth``: generate the paired set and the unlabeled pool, and list the pairs in the ``paired`` table.

Two sources of clean images: procedural scenes (the default), or real clean photos (``synth.clean``: a folder, glob
or manifest listed by the pool's rules, or ``bundled`` for the photos the package ships) degraded by the physical
models of :mod:`fairweather.synth.photo`. Depth for real photos comes from the configured Depth Anything model when
its weights are real and present, else from the documented geometric prior; every row says which.

Generation is single-process numpy work, so it runs on the driver without Ray. The table is written after the
image files, so every row names a complete file; unusable clean photos become ``errors`` rows.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.tables import TableStore
from fairweather.stages.infra.console import say
from fairweather.stages.infra.pool import list_pool
from fairweather.synth import BUNDLED, SPLITS, errors_table, generate, write_pairs
from fairweather.synth.depth import DepthFn
from fairweather.tiny import is_tiny

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthSummary:
    paired_dir: str
    pool_dir: str
    num_paired: int
    num_unlabeled: int
    #: Generated pairs per split (train / val / test).
    splits: dict[str, int]
    #: Image files written or rewritten, and ``paired`` rows added or changed (both 0 on an identical rerun).
    files_written: int
    rows_written: int
    source: str
    #: Where depth came from, per source ("procedural", "model:<id>", "prior:..."), and clean photos refused.
    depth_sources: tuple[str, ...]
    clean_errors: int
    seconds: float


def _clean_sources(cfg: FairweatherConfig) -> list[str] | None:
    """The clean photos of ``synth.clean`` listed by the pool's rules; None for procedural scenes or ``bundled``
    (which :func:`fairweather.synth.generate` resolves itself)."""
    clean = cfg.synth.clean
    if not clean or clean == BUNDLED:
        return None
    listing = list_pool(clean, follow_links_out=cfg.data.follow_links_out, roots=cfg.data.roots)
    for reason, uris in listing.skipped.items():
        log.info("synth: %d clean-photo entries not listed (%s), e.g. %s", len(uris), reason, uris[:3])
    return [str(item["uri"]) for item in listing.items]


def _depth_model(cfg: FairweatherConfig) -> tuple[DepthFn | None, str]:
    """The configured depth model when its weights are real and present here, else None (the geometric prior) and
    why, for the summary line."""
    model_id = cfg.encoders.depth.model_id
    if is_tiny(model_id):
        return None, f"{model_id} has random weights"
    from fairweather.encoders.depth import DepthEstimator

    try:
        return DepthEstimator.from_config(cfg.encoders.depth, cfg.runtime.model_cache_dir), ""
    except OSError as err:  # weights not downloaded: `fairweather prefetch` gets them
        log.warning("synth: depth model %s not loadable (%s); using the geometric prior", model_id, err)
        return None, f"{model_id} weights absent (fairweather prefetch)"


def run_synth(cfg: FairweatherConfig) -> SynthSummary:
    """Write ``<synth.out>/paired`` and ``<synth.out>/pool`` (see :func:`fairweather.synth.generate`) and the
    ``paired`` table (dataset ``synth``, or ``synth-photo`` for real clean photos) under ``data.tables``."""
    start = time.perf_counter()
    clean = _clean_sources(cfg)
    depth_fn, why_prior = _depth_model(cfg) if cfg.synth.clean else (None, "")
    result = generate(
        cfg.synth,
        max_pixels=cfg.data.max_image_pixels,
        clean_sources=clean,
        depth_fn=depth_fn,
        depth_name=cfg.encoders.depth.model_id,
    )
    store = TableStore(cfg.data.tables)
    rows = write_pairs(store, result.pairs)
    if result.errors:
        store.write("errors", errors_table(result.errors))
    counts = Counter(pair.split for pair in result.pairs)
    summary = SynthSummary(
        paired_dir=result.paired_dir,
        pool_dir=result.pool_dir,
        num_paired=result.num_paired,
        num_unlabeled=result.num_unlabeled,
        splits={split: counts[split] for split in SPLITS},
        files_written=result.files_written,
        rows_written=rows,
        source=result.source,
        depth_sources=tuple(result.depth_sources),
        clean_errors=len(result.errors),
        seconds=round(time.perf_counter() - start, 2),
    )
    depth = ", ".join(summary.depth_sources) + (f" ({why_prior})" if why_prior else "")
    refused = f"; {len(result.errors)} clean photo(s) refused (errors table)" if result.errors else ""
    say(
        f"synth: {result.num_paired} paired -> {result.paired_dir} (train/val/test "
        f"{'/'.join(str(n) for n in summary.splits.values())}), {result.num_unlabeled} unlabeled -> "
        f"{result.pool_dir} from {result.source}; depth: {depth}{refused}; {rows} table row(s), "
        f"{result.files_written} file(s) written in {summary.seconds:.1f}s"
    )
    return summary
