"""``fairweather demo``: the whole platform on a fresh machine — no cluster, no tracking server, no downloads.

generate data -> build the tiny models -> ``fairweather pipeline`` (label -> initial pseudo-labels -> stage-1
prompts -> training rounds -> evaluation report) -> a 2-trial ``fairweather sweep`` of the loss weights, all on one
private local Ray; then the numbers a person looks at: the input vs. restored PSNR/SSIM on the synthetic test split
and where the report is (the sweep's own lines, just above them, say how to open MLflow's compare view).
``--pool DIR`` labels and trains on a folder of real photos instead of the generated pool (the labeled pairs are
still generated).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import fairweather
from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.config.sweep import load_sweep
from fairweather.contracts.errors import FairweatherError
from fairweather.stages.infra.console import say
from fairweather.stages.infra.pool import list_pool
from fairweather.stages.infra.prefetch import PrefetchSummary, run_prefetch
from fairweather.stages.infra.runtime import ray_session
from fairweather.stages.pipeline.driver import PipelineSummary, run_pipeline
from fairweather.stages.sweep.driver import SweepSummary, run_sweep
from fairweather.stages.synth.driver import SynthSummary, run_synth

#: The sweep the demo runs: ``sweeps/smoke.yaml`` of the source checkout the package runs from.
SMOKE_SWEEP = Path(fairweather.__file__).resolve().parents[2] / "sweeps" / "smoke.yaml"


@dataclass(frozen=True)
class DemoSummary:
    synth: SynthSummary
    prefetch: PrefetchSummary
    pipeline: PipelineSummary
    sweep: SweepSummary | None
    #: ``{weather: {"input_psnr", "psnr", "input_ssim", "ssim"}}`` of the trained EMA teacher on the test split.
    test: dict[str, dict[str, float]]
    #: True when the trained network beats the untouched input in PSNR on the test split overall.
    restored_wins: bool


def _demo_config(cfg: FairweatherConfig, pool: str | None) -> tuple[FairweatherConfig, list[str]]:
    """With ``pool``: label that folder and generate no pool (the overrides carry it into the sweep too)."""
    if pool is None:
        return cfg, []
    if not Path(pool).expanduser().is_dir():
        raise FairweatherError(f"--pool {pool!r} is not a folder of images")
    folder = str(Path(pool).expanduser().resolve())
    # A folder without images: say so before any work.
    list_pool(folder, follow_links_out=cfg.data.follow_links_out, what="--pool")
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, pool=folder),
        synth=dataclasses.replace(cfg.synth, num_unlabeled=0),
    )
    return cfg, [f"data.pool={folder}", "synth.num_unlabeled=0"]


def _test_table(pipeline: PipelineSummary) -> dict[str, dict[str, float]]:
    rounds = next((stage.summary for stage in pipeline.stages if stage.stage == "rounds"), {})
    return rounds.get("test", {})


def run_demo(
    cfg: FairweatherConfig,
    *,
    base: str = "smoke",
    overrides: Sequence[str] = (),
    pool: str | None = None,
    sweep: str | Path | None = SMOKE_SWEEP,
) -> DemoSummary:
    """Run the demo on ``cfg`` (loaded from ``base`` with ``overrides``; the sweep derives its trials from the
    same two). ``sweep=None`` skips the sweep."""
    cfg, pool_overrides = _demo_config(cfg, pool)
    overrides = [*overrides, *pool_overrides]
    if sweep is not None and not Path(sweep).is_file():
        raise FairweatherError(f"the demo's sweep file {sweep} does not exist (pass --sweep <file>)")
    began = time.perf_counter()
    synth = run_synth(cfg)
    prefetch = run_prefetch(cfg)
    seconds = {"synth + models": time.perf_counter() - began}
    began = time.perf_counter()
    with ray_session(cfg):
        seconds["Ray start"] = time.perf_counter() - began
        pipeline = run_pipeline(cfg)
        seconds.update((stage.stage, stage.seconds) for stage in pipeline.stages if stage.status == "ran")
        swept = None
        if sweep is not None:
            spec = dataclasses.replace(load_sweep(sweep), base=base)
            swept = run_sweep(spec, overrides)
            seconds["sweep"] = swept.seconds
    test = _test_table(pipeline)
    overall = test.get("overall", {})
    wins = bool(overall) and overall["psnr"] > overall["input_psnr"]
    _print_closing(pipeline, swept, test, wins, seconds)
    return DemoSummary(synth, prefetch, pipeline, swept, test, wins)


def _print_closing(
    pipeline: PipelineSummary,
    sweep: SweepSummary | None,
    test: dict[str, dict[str, float]],
    wins: bool,
    seconds: dict[str, float],
) -> None:
    """The demo's summary: where the time went, input vs. restored on the test split, where to look next."""
    ran = ", ".join(f"{stage} {value:.0f} s" for stage, value in seconds.items())
    say(f"\n== fairweather demo: {ran} ==")
    overall = test.get("overall", {})
    if overall and not math.isnan(overall.get("psnr", math.nan)):
        say(f"{'test split':<12}{'PSNR: input -> restored':>24}{'gain':>8}{'SSIM: input -> restored':>26}")
        for weather in sorted(test, key=lambda w: (w == "overall", w)):
            row = test[weather]
            gain = row["psnr"] - row["input_psnr"]
            say(
                f"{weather:<12}{row['input_psnr']:>14.2f} -> {row['psnr']:<6.2f}{gain:>+8.2f}"
                f"{row['input_ssim']:>16.4f} -> {row['ssim']:.4f}"
            )
        gain = overall["psnr"] - overall["input_psnr"]
        say(
            f"synthetic test split, overall: {gain:+.2f} dB PSNR: "
            + ("the trained network wins" if wins else "the trained network does NOT beat the input")
        )
    say(f"evaluation report: {pipeline.report_dir}")
    say(
        "Note: the VLM, CLIP and Depth Anything here are tiny random models, so the VLM ratings and the CLIP and "
        "depth loss terms mean nothing; PSNR/SSIM on the pairs and PIQE/NIQE everywhere are real metrics. The "
        "paper's models: README, Running on a cluster."
    )
