"""``fairweather synth``: generate the paired set and the unlabeled pool the other stages read.

Generation is fast, single-process numpy work, so it runs on the driver without Ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fairweather.contracts.config import FairweatherConfig
from fairweather.synth import SynthResult, generate


@dataclass(frozen=True)
class SynthSummary:
    result: SynthResult
    seconds: float


def run_synth(cfg: FairweatherConfig) -> SynthSummary:
    """Write ``<synth.out>/paired`` and ``<synth.out>/pool`` (see :func:`fairweather.synth.generate`)."""
    start = time.perf_counter()
    result = generate(cfg.synth, max_pixels=cfg.data.max_image_pixels)
    summary = SynthSummary(result=result, seconds=round(time.perf_counter() - start, 2))
    print(
        f"synth: {result.num_paired} paired -> {result.paired_dir}, {result.num_unlabeled} unlabeled -> "
        f"{result.pool_dir} from {result.source}; {result.files_written} file(s) written in {summary.seconds:.1f}s"
    )
    return summary
