"""``fairweather synth``: generate the paired set and the unlabeled pool, and list the pairs in the ``paired`` table.

Generation is fast, single-process numpy work, so it runs on the driver without Ray. The table is written after the
image files, so every row names a complete file.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.tables import TableStore
from fairweather.synth import SPLITS, generate, write_pairs


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
    seconds: float


def run_synth(cfg: FairweatherConfig) -> SynthSummary:
    """Write ``<synth.out>/paired`` and ``<synth.out>/pool`` (see :func:`fairweather.synth.generate`) and the
    ``paired`` table (dataset ``synth``) under ``data.tables``."""
    start = time.perf_counter()
    result = generate(cfg.synth, max_pixels=cfg.data.max_image_pixels)
    rows = write_pairs(TableStore(cfg.data.tables), result.pairs)
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
        seconds=round(time.perf_counter() - start, 2),
    )
    print(
        f"synth: {result.num_paired} paired -> {result.paired_dir} (train/val/test "
        f"{'/'.join(str(n) for n in summary.splits.values())}; {rows} table row(s) written to {cfg.data.tables}), "
        f"{result.num_unlabeled} unlabeled -> {result.pool_dir} from {result.source}; "
        f"{result.files_written} file(s) written in {summary.seconds:.1f}s"
    )
    return summary
