"""Evaluation: which image-quality metrics score which methods on which test sets (``fairweather evaluate``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from .loader import AT_LEAST_ONE, NON_NEGATIVE, FieldRangeError, check_ranges

#: Every metric the platform can score; ``fairweather.metrics.METRICS`` describes each (reference or not,
#: direction, weights, licence). A Literal, so a misspelt name is refused when the config loads.
MetricName = Literal[
    "nima",
    "musiq",
    "clipiqa",
    "liqe",
    "qalign",
    "niqe",
    "brisque",
    "piqe",
    "psnr",
    "ssim",
    "lpips",
    "vlm_vis",
]

#: ``none`` (full resolution) or ``short_side:<pixels>`` (downscale, never upscale, before restoring and scoring).
_RESIZE = re.compile(r"none|short_side:([1-9][0-9]*)")


@dataclass(frozen=True)
class ScorerConfig:
    """Where and how the metrics run."""

    #: Torch device of the metric networks (``cuda``, ``cuda:1``, ``cpu``).
    device: str = "cpu"
    #: Images per metric call (same-size images are batched; mixed sizes go one at a time).
    batch_size: int = 8
    #: Folder of pyiqa's weight files (what ``fairweather prefetch`` fills); ``None``: ``$TORCH_HOME/hub/pyiqa``.
    weights_dir: str | None = None

    def __post_init__(self) -> None:
        check_ranges(self, batch_size=AT_LEAST_ONE)


@dataclass(frozen=True)
class EvaluateConfig:
    """The paper's tables: no-reference metrics on real images, full-reference ones where a clean target exists."""

    #: No-reference columns (Paper A: NIMA, MUSIQ, CLIP-IQA, then LIQE, Q-Align, VLM-Vis).
    metrics: tuple[MetricName, ...] = ("nima", "musiq", "clipiqa", "liqe", "qalign", "vlm_vis")
    #: Full-reference columns, scored on test sets that have targets.
    reference_metrics: tuple[MetricName, ...] = ("psnr", "ssim")
    #: ``none`` (full resolution, tiled restore) or ``short_side:<px>``; recorded with every number.
    resize: str = "none"
    #: ``paired:<split>`` (the paired table, every dataset), ``paired:<dataset>:<split>`` (one dataset: ``synth``
    #: = the generated pairs, or an ``import-pairs --dataset`` name), a folder, or a manifest of images.
    test_sets: tuple[str, ...] = ("paired:test",)
    #: Checkpoint folders (holding ``state.pt``) of the methods to evaluate: ``path`` (named by the folder) or
    #: ``name=path``.
    checkpoints: tuple[str, ...] = ()
    #: ``name=folder`` of another method's restored outputs, matched to the test images by file name.
    baseline_folders: tuple[str, ...] = ()
    #: Score the untouched inputs as the method ``input``.
    include_input: bool = True
    #: Scoring actors, and what each reserves.
    concurrency: int = 1
    #: Restore and score each image in one actor (``concurrency`` of them) instead of a restore pool and a score
    #: pool: one process holds torch, the network and the metrics, so less memory (big photos on a small
    #: machine); two pools overlap restoring one image with scoring another, so more images/s.
    one_actor: bool = False
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0
    #: Where the markdown/CSV report and figures go; ``None``: ``<runs_dir>/reports/<run name>``.
    report_dir: str | None = None
    scorer: ScorerConfig = field(default_factory=ScorerConfig)

    def __post_init__(self) -> None:
        check_ranges(
            self, concurrency=AT_LEAST_ONE, num_cpus_per_actor=NON_NEGATIVE, num_gpus_per_actor=NON_NEGATIVE
        )
        if not _RESIZE.fullmatch(self.resize):
            raise FieldRangeError("resize", f"must be 'none' or 'short_side:<pixels>', got {self.resize!r}")
        for entry in self.baseline_folders:
            name, sep, folder = entry.partition("=")
            if not (sep and name.strip() and folder.strip()):
                raise FieldRangeError("baseline_folders", f"entries must be 'name=folder', got {entry!r}")

    @property
    def resize_short_side(self) -> int | None:
        """The ``short_side:<px>`` pixels, or ``None`` for full resolution."""
        match = _RESIZE.fullmatch(self.resize)
        return int(match.group(1)) if match and match.group(1) else None
