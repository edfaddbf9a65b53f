"""Wall time of a 4-trial sweep vs. the same four trainings one after another, and the trial-steps ASHA saves.

    .venv/bin/python benchmarks/bench_sweep.py                         # the smoke sweep's trials, 2 CPUs
    .venv/bin/python benchmarks/bench_sweep.py train.iterations_per_round=30

Generates pairs with ``run_synth`` in a temporary folder (no real pool: the trials train on the pairs, so the
semi-supervised weights only travel into the configs), then on one private local Ray of ``--num-cpus`` CPUs, with
MLflow on SQLite on every side:

- ``sweep``: ``run_sweep`` of ``sweeps/smoke.yaml``'s fixed settings over a deterministic 4-value grid of w1
  (``loss.weights.ps``), no scheduler: ``max_concurrent_trials`` trainers at once (the smoke file: 2 x 1 CPU).
- ``sequential``: the same four trial configs, ``run_rounds`` one after another (what a user would script).
- ``asha``: the sweep again with the smoke file's ASHA settings, over a grid of learning rates where one value
  learns and three cannot (so the cut is visible); trial-steps run vs. the full grid's 4 x ``train.total_steps``.

The ratio ``sequential / sweep`` is the concurrency gain net of Tune's scheduling overhead (trial actors, the
registry, the extra task per trial, the per-report hop to Tune). Only figures of one run are compared.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import tempfile
import time
from pathlib import Path

import ray

from fairweather.contracts.config import load_config, load_sweep
from fairweather.contracts.config.sweep import ParamSpace, SchedulerConfig, trial_overrides
from fairweather.stages.sweep.driver import run_sweep
from fairweather.stages.synth.driver import run_synth
from fairweather.stages.train.rounds import run_rounds

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = (0.1, 0.3, 0.5, 1.0)
RATES = (3e-3, 1e-7, 2e-7, 3e-7)


def data_overrides(root: Path, num_cpus: int) -> list[str]:
    """Everything under ``root``; small generated pairs; no real pool."""
    values = {
        "runtime.runs_dir": root / "runs",
        "runtime.model_cache_dir": root / "models",
        "runtime.storage_path": root / "train",
        "runtime.num_cpus": num_cpus,
        "data.tables": root / "tables",
        "data.pool": root / "data" / "pool",
        "synth.out": root / "data",
        "synth.num_paired": 60,
        "synth.num_unlabeled": 0,
        "synth.size": "[64,64]",
        "train.real_batch_size": 0,
        "train.crop_size": 64,
    }
    return [f"{k}={v}" for k, v in values.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument(
        "overrides", nargs="*", help="more config overrides (e.g. train.iterations_per_round=30)"
    )
    args = parser.parse_args()
    smoke = load_sweep(REPO / "sweeps" / "smoke.yaml")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        overrides = data_overrides(root, args.num_cpus) + list(args.overrides)
        run_synth(load_config(smoke.base, trial_overrides(smoke, {}, overrides)))
        grid = dataclasses.replace(
            smoke,
            name="bench-grid",
            params={"loss.weights.ps": ParamSpace("grid", values=WEIGHTS)},
            num_samples=1,
            scheduler=SchedulerConfig("none"),
        )
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            start = time.perf_counter()
            summary = run_sweep(grid, overrides)
            sweep_s = time.perf_counter() - start

            start = time.perf_counter()
            for index, weight in enumerate(WEIGHTS):
                trial = trial_overrides(grid, {"loss.weights.ps": weight}, overrides)
                run_rounds(load_config(grid.base, [*trial, f"train.run_name=bench-sequential-{index}"]))
            sequential_s = time.perf_counter() - start

            asha = dataclasses.replace(
                smoke,
                name="bench-asha",
                params={"train.lr": ParamSpace("grid", values=RATES)},
                num_samples=1,
            )
            start = time.perf_counter()
            cut = run_sweep(asha, overrides)
            asha_s = time.perf_counter() - start
        finally:
            ray.shutdown()
        with open(cut.artifacts["table.csv"]) as table:
            steps = sum(int(row["steps"]) for row in csv.DictReader(table))
        total = load_config(smoke.base, trial_overrides(smoke, {}, overrides)).train.total_steps
    concurrency = smoke.max_concurrent_trials
    print(f"4 trials x {total} steps, {args.num_cpus} CPUs, {concurrency} trials at once, MLflow on SQLite")
    print(f"sweep (Tune, no scheduler): {sweep_s:7.1f} s  ({summary.completed} completed)")
    print(
        f"sequential run_rounds:      {sequential_s:7.1f} s  -> sweep is {sequential_s / sweep_s:.2f}x faster"
    )
    print(
        f"sweep with ASHA:            {asha_s:7.1f} s  ({cut.stopped_early} stopped early): {steps} trial-steps "
        f"of {4 * total} ({1 - steps / (4 * total):.0%} saved)"
    )


if __name__ == "__main__":
    main()
