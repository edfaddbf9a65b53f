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
    start = time.perf_counter()
    result = generate(cfg.synth, max_pixels=cfg.data.max_image_pixels)
    return SynthSummary(result=result, seconds=round(time.perf_counter() - start, 2))
