"""Pseudo-labels: which scorers rate the candidates, how their scores combine, where candidates come from.

The paper does not publish how MUSIQ, CLIP-IQA, Q-Align and r_vlm combine, so the rule is configuration and is
written into every ``pseudo_labels`` row. The ablation rows of Paper A are switches here (``use_vlm``, ``init``,
``iterate``) and in ``loss.weights`` (``wpl``, ``sem``), so each row of the table is one config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

from .evaluate import MetricName, ScorerConfig
from .loader import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, FieldRangeError, check_ranges

#: Full-reference metrics need a clean target, which real images do not have (a test keeps this in step with
#: ``fairweather.metrics.METRICS``; the contracts layer cannot import the science layer's registry).
REFERENCE_METRICS = frozenset({"psnr", "ssim", "lpips"})
#: The labeling backend's visibility rating as a scorer: added by ``use_vlm``, never listed in ``metrics``.
VLM_METRIC = "vlm_vis"

Combination = Literal["weighted_mean", "rank_vote"]


@dataclass(frozen=True)
class GuardConfig:
    """Fidelity and artifact guards (``fairweather.pseudo.guards``): a candidate restoration that fails one cannot
    become a pseudo-label, whatever its no-reference scores (issue 20: a blue cast, an embossed dot texture and a
    grid of tile blocks all improved PIQE and NIQE). Each guard compares the candidate with the input it restores;
    the defaults were set on photos with synthetic haze (neutral, bluish and yellowish veils), rain, and
    artificial casts, dot textures and tile grids, to let genuine restorations through (see the module)."""

    #: Check the guards; off: candidates are compared by their scores alone (the paper's rule).
    enabled: bool = True
    #: ``guard_colour``: largest coloured offset (percent of full scale) that a per-pixel scattering gain around
    #: the input's airlight leaves unexplained. Genuine dehazing/deraining measured <= 10 except under strongly
    #: coloured veils (up to ~19); a strong blue cast 5-30.
    max_colour: float = 12.0
    #: ``guard_texture``: largest spectral peak the candidate adds (natural log of the power gain at one
    #: frequency over its ring's median). Genuine: <= 0.7 (haze), <= 2.3 (heavy synthetic rain); dot textures >= 3.
    max_texture: float = 2.7
    #: ``guard_grid``: largest excess prominence (natural log) of column/row steps on a periodic grid. Genuine:
    #: <= 0.25 (haze), <= 0.85 (heavy rain); tile grids with steps of 3-10 levels 0.2-2.4.
    max_grid: float = 0.9
    #: Grid periods checked (e.g. the tiler's ``model.tile - model.tile_overlap``); empty: every period >= 32 px.
    grid_periods: tuple[int, ...] = ()
    #: ``guard_structure``: smallest mean local correlation (SSIM's structure term) of downscaled luma. Genuine:
    #: >= 0.98 (haze), >= 0.75 (heavy rain removed); dot textures 0.5-0.95.
    min_structure: float = 0.5

    def __post_init__(self) -> None:
        check_ranges(
            self,
            max_colour=NON_NEGATIVE,
            max_texture=NON_NEGATIVE,
            max_grid=NON_NEGATIVE,
            grid_periods=AT_LEAST_ONE,
        )
        if not -1.0 <= self.min_structure <= 1.0:
            raise FieldRangeError("min_structure", f"must be in [-1, 1], got {self.min_structure}")


@dataclass(frozen=True)
class PseudoConfig:
    """The pseudo-label database (``fairweather pseudolabel``). Defaults are the paper's settings."""

    #: No-reference scorers of every candidate (pyiqa names; the paper: MUSIQ, CLIP-IQA, Q-Align).
    metrics: tuple[MetricName, ...] = ("musiq", "clipiqa", "qalign")
    #: Add r_vlm (VLM-Vis of the labeling backend ``vlm``) to the selection (ablation "+r_vlm in selection").
    use_vlm: bool = True
    #: ``weighted_mean``: each score normalised to [0, 1] by its range (1 = best), then the weighted mean;
    #: ``rank_vote``: per scorer the rank within the image's candidates (current pseudo-label included; ties share
    #: the average rank), scaled to [0, 1], then the weighted mean of the ranks.
    combination: Combination = "weighted_mean"
    #: Weight per scorer name (``vlm_vis`` for r_vlm); a scorer not named weighs 1.0.
    weights: dict[str, float] = field(default_factory=dict)
    #: ``[low, high]`` per scorer name, replacing the metric's known range (``fairweather.metrics``) in the
    #: normalisation; values outside are clipped.
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: A new candidate replaces the current pseudo-label (or, for an image without one, the input) only if its
    #: combined score is higher by more than this.
    margin: float = 0.0
    #: Fidelity and artifact guards every candidate but the input must pass to win.
    guards: GuardConfig = field(default_factory=GuardConfig)
    #: Score init candidates before round 1: the input itself, ``init_checkpoints`` and ``init_folders``.
    init: bool = True
    #: Existing restorers for init: checkpoints of the platform's networks, ``name=path`` or ``path``.
    init_checkpoints: tuple[str, ...] = ()
    #: ``name=folder`` of another method's outputs, matched to the pool images by file name (suffix ignored).
    init_folders: tuple[str, ...] = ()
    #: The paper's "init" needs an existing restorer; where there is none, the rounds (and the pipeline, as a stage
    #: of its own) first train one: a supervised warm-up of this many steps on the paired set (L_sup only, no real
    #: images), whose EMA teacher restores every pool image as the init candidate ``warmup``. 0: no warm-up.
    warmup_steps: int = 0
    #: The rounds start from the warm-up's network and EMA teacher (``train.init_weights``) instead of from random
    #: weights: the warm-up's steps are not trained again (the smoke profile: docs/real-weather.md).
    warmup_starts_rounds: bool = False
    #: Read by the rounds driver: update the pseudo-labels after every round (false: only after round 1).
    iterate: bool = True
    #: Folder (or URI) of the candidate files ``<sha256 of the PNG>.png``; ``None``: ``<data.tables>/candidates``.
    candidates_dir: str | None = None
    #: Rows per actor call (restore and score).
    batch_size: int = 8
    #: Restore actors (EMA teachers) and score actors, and what each reserves.
    restore_concurrency: int = 1
    score_concurrency: int = 1
    #: Restore, store and score each candidate in one actor (``restore_concurrency`` of them): less memory on big
    #: photos, no overlap of restoring and scoring (see ``evaluate.one_actor``).
    one_actor: bool = False
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0
    #: The driver writes finished candidate rows every ``flush_rows`` rows or ``flush_seconds`` seconds.
    flush_rows: int = 256
    flush_seconds: float = 30.0
    scorer: ScorerConfig = field(default_factory=ScorerConfig)

    def __post_init__(self) -> None:
        check_ranges(
            self,
            margin=NON_NEGATIVE,
            warmup_steps=NON_NEGATIVE,
            batch_size=AT_LEAST_ONE,
            restore_concurrency=AT_LEAST_ONE,
            score_concurrency=AT_LEAST_ONE,
            num_cpus_per_actor=NON_NEGATIVE,
            num_gpus_per_actor=NON_NEGATIVE,
            flush_rows=AT_LEAST_ONE,
            flush_seconds=POSITIVE,
        )
        reference = sorted(REFERENCE_METRICS.intersection(self.metrics))
        if reference:
            raise FieldRangeError("metrics", f"{reference} need a clean target; real images have none")
        if VLM_METRIC in self.metrics:
            raise FieldRangeError("metrics", "r_vlm joins the selection through pseudo.use_vlm, not metrics")
        if not self.scorer_names:
            raise FieldRangeError("metrics", "no scorer: list a metric or set use_vlm")
        known = set(get_args(MetricName))
        for name, weight in self.weights.items():
            if name not in known:
                raise FieldRangeError("weights", f"unknown scorer {name!r}")
            if not (math.isfinite(weight) and weight >= 0):
                raise FieldRangeError("weights", f"{name}: must be a finite number >= 0, got {weight}")
        if not any(self.weights.get(name, 1.0) > 0 for name in self.scorer_names):
            raise FieldRangeError("weights", "every scorer of the selection weighs 0")
        for name, (low, high) in self.ranges.items():
            if name not in known:
                raise FieldRangeError("ranges", f"unknown scorer {name!r}")
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise FieldRangeError("ranges", f"{name}: must be finite [low, high] with low < high")
        _check_named("init_checkpoints", self.init_checkpoints, name_required=False)
        _check_named("init_folders", self.init_folders, name_required=True)

    @property
    def scorer_names(self) -> tuple[str, ...]:
        """The scorers of the selection, in order: ``metrics``, then ``vlm_vis`` when ``use_vlm``."""
        return tuple(self.metrics) + ((VLM_METRIC,) if self.use_vlm else ())


def _check_named(key: str, entries: tuple[str, ...], *, name_required: bool) -> None:
    """``name=path`` entries (or a bare ``path`` where no name is required) with nothing empty."""
    for entry in entries:
        name, sep, path = entry.partition("=")
        ok = (name.strip() and path.strip()) if sep else (entry.strip() and not name_required)
        if not ok:
            form = "'name=path'" if name_required else "'name=path' or 'path'"
            raise FieldRangeError(key, f"entries must be {form}, got {entry!r}")
