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
from fairweather.synth import SynthResult, generate, write_pairs


@dataclass(frozen=True)
class SynthSummary:
    result: SynthResult
    #: ``paired`` rows added or changed (0 on an identical rerun).
    rows_written: int
    seconds: float


def run_synth(cfg: FairweatherConfig) -> SynthSummary:
    """Write ``<synth.out>/paired`` and ``<synth.out>/pool`` (see :func:`fairweather.synth.generate`) and the
    ``paired`` table (dataset ``synth``) under ``data.tables``."""
    start = time.perf_counter()
    result = generate(cfg.synth, max_pixels=cfg.data.max_image_pixels)
    rows = write_pairs(TableStore(cfg.data.tables), result.pairs)
    summary = SynthSummary(result=result, rows_written=rows, seconds=round(time.perf_counter() - start, 2))
    splits = Counter(pair.split for pair in result.pairs)
    print(
        f"synth: {result.num_paired} paired -> {result.paired_dir} "
        f"(train/val/test {splits['train']}/{splits['val']}/{splits['test']}; {rows} table row(s) written to "
        f"{cfg.data.tables}), {result.num_unlabeled} unlabeled -> {result.pool_dir} from {result.source}; "
        f"{result.files_written} file(s) written in {summary.seconds:.1f}s"
    )
    return summary
