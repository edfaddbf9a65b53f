"""The real-world ablation: does training transfer to real weather, and does the real pool help?

    .venv/bin/python benchmarks/bench_realworld.py \\
        --real-pairs rain=devdata/rain100h rain=devdata/rain100l haze=devdata/sots_outdoor haze=devdata/o_haze \\
        --real-pool ../shared/realpool --steps 1000 --out runs/realworld

Three arms, each trained for ``--steps`` steps with the same seed on the smoke profile's network and schedule
(every arm in its own runs folder, its own tables and MLflow store):

- ``a_generated``: supervised (L_sup) on procedural generated scenes (``synth.clean`` unset);
- ``b_photo``: supervised on real clean photos with physically based weather (``synth.clean=bundled``);
- ``c_photo_pool``: ``b_photo``'s pairs plus the real pool, through ``fairweather pipeline``: label the pool, the
  supervised warm-up and the init pseudo-labels (input vs. warm-up, PIQE + NIQE with the guards), then the rounds
  with L_ps on the selected pseudo-labels: ``--steps`` in all, split over ``train.rounds`` (where the rounds start
  from the warm-up's network, ``pseudo.warmup_starts_rounds``, its steps count: the network trains ``--steps``).
  The encoder terms (L_wpl, L_sem, L_feat) are off where their encoder is a tiny random model (the smoke profile's): there they are
  noise, and the arm measures what the real pool adds through the pseudo-labels.

Each arm's final EMA teacher is evaluated by ``fairweather evaluate`` on every ``--real-pairs`` folder (imported
with ``import-pairs --split test`` as dataset ``<folder name>``: PSNR/SSIM against the targets, PIQE/NIQE) and on
the real pool (PIQE/NIQE only), and one table is printed: input vs. each arm. Extra ``key=value`` arguments
override the config of every arm (e.g. ``train.crop_size=96``). ``--tiny`` shrinks everything for the test suite.
A finished arm leaves ``<out>/<arm>/result.json``: a rerun reuses it (after a crash, or to add an arm).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pyarrow.compute as pc

from fairweather.contracts.config import FairweatherConfig, load_config
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.tables import TableStore
from fairweather.stages.evaluate.driver import run_evaluate
from fairweather.stages.infra.console import close_run_log, say, setup_run_log
from fairweather.stages.infra.prefetch import run_prefetch
from fairweather.stages.pipeline.driver import run_pipeline
from fairweather.stages.synth.driver import run_synth
from fairweather.stages.synth.import_pairs import run_import_pairs
from fairweather.stages.train.rounds import run_rounds
from fairweather.tiny import is_tiny

ARMS = ("a_generated", "b_photo", "c_photo_pool")
#: Each finished arm's training seconds and evaluation rows, in its folder.
RESULT_FILE = "result.json"
SUPERVISED_ONLY = ["loss.weights.ps=0", "loss.weights.wpl=0", "loss.weights.sem=0", "loss.weights.feat=0"]
TINY = [
    "synth.num_paired=24",
    "synth.size=[48,48]",
    "train.crop_size=32",
    "train.batch_size=2",
    "train.val_images=2",
    "train.val_real_images=1",
    "train.prompt_images_per_weather=2",
    "train.log_every=2",
    "loss.prompt_fit_steps=2",
    "pseudo.warmup_steps=2",
    "pseudo.metrics=[piqe]",
    "evaluate.metrics=[piqe]",
]


def arm_config(
    arm: str, out: Path, steps: int, seed: int, pool: str | None, extra: list[str]
) -> FairweatherConfig:
    """The config of one arm: its own runs folder; ``--steps`` of training in all."""
    rounds = 2 if arm == "c_photo_pool" else 1
    base = load_config("smoke", extra).pseudo
    if arm == "c_photo_pool" and base.warmup_starts_rounds:
        steps -= base.warmup_steps  # the rounds go on from the warm-up's network
    overrides = [
        f"runtime.runs_dir={out / arm}",
        f"runtime.seed={seed}",
        f"train.rounds={rounds}",
        f"train.iterations_per_round={max(1, steps // rounds)}",
        f"train.checkpoint_every={max(1, steps // rounds)}",
        "synth.clean=null" if arm == "a_generated" else "synth.clean=bundled",
    ]
    if arm == "c_photo_pool":
        overrides += [f"data.pool={pool}", "synth.num_unlabeled=0"]
        overrides += random_encoder_terms(load_config("smoke", [*overrides, *extra]))
    else:
        overrides += [
            *SUPERVISED_ONLY,
            "synth.num_unlabeled=0",
            "pseudo.init=false",
            "train.real_batch_size=0",
        ]
    return load_config("smoke", [*overrides, *extra])


def random_encoder_terms(cfg: FairweatherConfig) -> list[str]:
    """Overrides switching off the loss terms whose encoder has random weights (a ``tiny:`` model)."""
    clip, depth = is_tiny(cfg.encoders.clip.model_name), is_tiny(cfg.encoders.depth.model_id)
    off = [("wpl", clip), ("sem", clip), ("feat", depth)]
    return [f"loss.weights.{term}=0" for term, random in off if random]


def train_arm(arm: str, cfg: FairweatherConfig) -> str:
    """Synthesise the arm's pairs and train it; returns the final checkpoint."""
    run_synth(cfg)
    if arm == "c_photo_pool":
        # No test sets: the pipeline's own evaluation is off; the arms are evaluated alike below.
        return run_pipeline(
            dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, test_sets=()))
        ).checkpoint
    return run_rounds(cfg).checkpoint


def evaluate_arm(
    arm: str, cfg: FairweatherConfig, checkpoint: str, pairs: list[tuple[str, str]], pool: str | None
):
    """Import the real pairs into the arm's tables (split test) and evaluate input and the arm's checkpoint."""
    sets = []
    for weather, folder in pairs:
        name = Path(folder).name
        run_import_pairs(cfg, folder, "generic", name, weather=weather, split="test")
        sets.append(f"paired:{name}:test")
    if pool:
        sets.append(pool)
    evaluate = dataclasses.replace(
        cfg.evaluate,
        test_sets=tuple(sets),
        checkpoints=(f"{arm}={checkpoint}",),
        reference_metrics=("psnr", "ssim"),
        include_input=True,
    )
    summary = run_evaluate(dataclasses.replace(cfg, evaluate=evaluate))
    return evaluation_rows(cfg, summary.run_name)


def evaluation_rows(cfg: FairweatherConfig, run_name: str) -> list[dict]:
    """The ``overall`` rows of evaluation ``run_name`` in the arm's ``metrics`` table (sets of 2+ images)."""
    metrics = TableStore(cfg.data.tables).read("metrics")
    rows = metrics.filter(
        pc.and_(pc.equal(metrics["run_id"], run_name), pc.greater(metrics["num_images"], 1))
    )
    return [r for r in rows.to_pylist() if r["weather"] == "overall"]


def _cell(values: dict[str, float], column: str) -> str:
    """An arm's value with its change from the input, e.g. ``18.30 (+3.39)``."""
    if column not in values:
        return ""
    shown = f"{values[column]:.3f}"
    if column != "input" and "input" in values:
        shown += f" ({values[column] - values['input']:+.3f})"
    return shown


def table(results: dict[str, list[dict]]) -> str:
    """One Markdown table: a row per (test set, metric), a column for the input and each arm."""
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for arm, rows in results.items():
        for r in rows:
            cells.setdefault((r["dataset"], r["metric"]), {})["input" if r["method"] == "input" else arm] = r[
                "value"
            ]
    columns = ["input", *results]
    lines = ["| test set | metric | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for (dataset, metric), values in sorted(cells.items()):
        shown = [_cell(values, c) for c in columns]
        lines.append(f"| {dataset} | {metric} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real-pairs", nargs="+", required=True, metavar="WEATHER=DIR")
    parser.add_argument(
        "--real-pool", help="folder of real weather photos: arm c's pool, NR-scored for every arm"
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/realworld")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--tiny", action="store_true", help="a few steps on tiny images (the test suite)")
    parser.add_argument("overrides", nargs="*", help="key=value for every arm's config")
    args = parser.parse_args()
    pairs = [tuple(entry.split("=", 1)) for entry in args.real_pairs]
    if bad := [
        entry for entry, pair in zip(args.real_pairs, pairs, strict=True) if len(pair) != 2 or not all(pair)
    ]:
        parser.error(f"--real-pairs takes WEATHER=DIR (e.g. rain=devdata/rain100h), got {bad}")
    # Before any training: a missing folder would otherwise surface only at the evaluation, minutes later.
    if missing := [
        d for d in [*(folder for _, folder in pairs), args.real_pool] if d and not Path(d).is_dir()
    ]:
        parser.error(f"not a folder: {', '.join(missing)}")
    pool = str(Path(args.real_pool).resolve()) if args.real_pool else None
    out = Path(args.out).resolve()
    extra = (TINY if args.tiny else []) + args.overrides
    results, seconds = {}, {}
    log = setup_run_log(
        out, "bench-realworld"
    )  # Ray's and the libraries' chatter; the stages' lines stay here
    say(f"bench_realworld: log in {log}")
    for arm in args.arms.split(","):
        if arm == "c_photo_pool" and not pool:
            say("c_photo_pool needs --real-pool: skipped")
            continue
        done = out / arm / RESULT_FILE
        if done.is_file():  # a rerun after a crash (or with more arms) keeps what finished; delete it to redo
            saved = json.loads(done.read_text())
            seconds[arm], results[arm] = saved["seconds"], saved["rows"]
            say(f"{arm}: done before, reused ({done})")
            continue
        cfg = arm_config(arm, out, args.steps, args.seed, pool, extra)
        run_prefetch(cfg)
        start = time.perf_counter()
        checkpoint = train_arm(arm, cfg)
        seconds[arm] = round(time.perf_counter() - start, 1)
        results[arm] = evaluate_arm(arm, cfg, checkpoint, pairs, pool)
        done.write_text(json.dumps({"seconds": seconds[arm], "rows": results[arm]}, default=str, indent=1))
    text = table(results)
    (out / "ablation.md").write_text(text + "\n")
    (out / "ablation.json").write_text(
        json.dumps({"seconds": seconds, "results": results}, default=str, indent=1)
    )
    say(
        f"\nreal-world ablation: {args.steps} steps per arm, seed {args.seed}; training seconds {seconds}\n\n{text}"
    )
    close_run_log()


if __name__ == "__main__":
    try:
        main()
    except FairweatherError as error:  # one line on the console; the traceback is in the run log
        say(f"bench_realworld: error: {error}")
        raise SystemExit(1) from None
