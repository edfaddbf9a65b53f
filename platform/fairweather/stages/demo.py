"""``fairweather demo``: everything that exists today, end to end, on one config (default: the smoke profile).

generate data -> build/download models -> label the unlabeled pool with the VLM. Pseudo-labeling, training, the
sweep and evaluation join as their stages land; the summary says which are still to come.
"""

from __future__ import annotations

from dataclasses import dataclass

from fairweather.contracts.config import FairweatherConfig

from .label import LabelSummary, run_label
from .prefetch import PrefetchSummary, run_prefetch
from .synth import SynthSummary, run_synth

#: Stages of the full pipeline that the demo cannot run yet.
STILL_TO_COME = ("pseudolabel", "train", "sweep", "evaluate")


@dataclass(frozen=True)
class DemoSummary:
    synth: SynthSummary
    prefetch: PrefetchSummary
    label: LabelSummary
    still_to_come: tuple[str, ...] = STILL_TO_COME


def run_demo(cfg: FairweatherConfig) -> DemoSummary:
    synth = run_synth(cfg)
    prefetch = run_prefetch(cfg)
    label = run_label(cfg)
    print(f"demo: done through labeling; still to come: {', '.join(STILL_TO_COME)} (open issues)")
    return DemoSummary(synth=synth, prefetch=prefetch, label=label)
