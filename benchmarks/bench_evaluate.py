"""Throughput of the evaluation job: Ray Data (1 and 2 actors per pool) vs. the same work in a plain Python loop.

    .venv/bin/python benchmarks/bench_evaluate.py --images 96 --size 128

Generates a paired test set (noisy inputs, clean targets) and a checkpoint of the smoke profile's network, then
scores every (image, method) row for the methods ``input`` and the checkpoint, with the offline metrics (PIQE, plus
NIQE when its parameters are present; PSNR and SSIM against the targets), side by side:
``loop`` (read, decode, restore, then each metric one image at a time, in this process, torch on 1 thread), and
``ray x1`` / ``ray x2`` (:func:`fairweather.stages.evaluate.driver.evaluation_dataset`, ``evaluate.concurrency`` = 1 / 2
actors per pool, 1 CPU and 1 torch thread each, on a private local Ray). Like ``bench_label.py`` each is run on
``--base-images`` and on ``--images`` images and it prints

- end-to-end rows/s on the full set (scorer/model loading and actor start-up included), and
- marginal rows/s = (rows(full) - rows(base)) / (seconds(full) - seconds(base)): the rate once start-up is paid,

with the ratios to the loop, and the loop's cost split per metric (seconds per row, share of the scoring time).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import torch
from PIL import Image

from fairweather.contracts.config import FairweatherConfig, load_config, to_dict
from fairweather.contracts.tables import TableStore
from fairweather.data.batches import to_tensor
from fairweather.metrics import build_scorer, missing_weights
from fairweather.models import build_model
from fairweather.stages.engine.rows import CheckpointRef, read_one
from fairweather.stages.evaluate.driver import evaluation_dataset
from fairweather.stages.evaluate.io import list_test_set, work_rows
from fairweather.stages.infra.cpus import machine_cpus
from fairweather.training.restorer import load_restorer
from fairweather.training.state import FORMAT_VERSION, save_state


def make_test_set(root: Path, count: int, size: int) -> None:
    """``count`` noisy/clean pairs of smooth scenes in a ``paired`` table under ``root/tables`` (split test)."""
    rng = np.random.default_rng(0)
    rows = []
    y, x = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        clean = (np.stack([x, y, (x + y) / 2], -1) * 200 + rng.uniform(0, 50, 3)).clip(0, 255)
        noisy = (clean + rng.normal(0, 20, clean.shape)).clip(0, 255)
        for kind, rgb in (("input", noisy), ("target", clean)):
            (root / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb.astype(np.uint8)).save(root / kind / f"{i:05d}.png")
        rows.append(
            {
                "pair_id": f"bench/{i:05d}",
                "dataset": "bench",
                "split": "test",
                "weather": ("rain", "haze", "snow")[i % 3],
                "input_uri": f"../input/{i:05d}.png",
                "target_uri": f"../target/{i:05d}.png",
                "width": size,
                "height": size,
                "created_at": datetime.now(timezone.utc),
            }
        )
    TableStore(str(root / "tables")).write("paired", pa.Table.from_pylist(rows))


def make_checkpoint(cfg: FairweatherConfig, folder: Path) -> str:
    torch.manual_seed(0)
    weights = build_model(cfg.model).state_dict()
    save_state(
        {
            "format": FORMAT_VERSION,
            "arch": cfg.model.arch,
            "model": weights,
            "teacher": weights,
            "prompt_context": None,
            "step": 0,
            "config": to_dict(cfg),
        },
        folder,
    )
    return str(folder)


def run_loop(
    cfg: FairweatherConfig, rows: list[dict], ckpt: str, metrics: tuple, reference: tuple
) -> tuple[float, Counter]:
    """Seconds for every row in one process, and seconds per metric."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    restorer = load_restorer(ckpt, device="cpu")
    scorers = {name: build_scorer(name, cfg.evaluate.scorer, vlm=cfg.vlm) for name in metrics + reference}
    cost: Counter = Counter()
    for row in rows:
        item = read_one(row, max_pixels=cfg.data.max_image_pixels, short_side=None)
        shape = (item["height"], item["width"], 3)
        image = np.frombuffer(item["pixels"], np.uint8).reshape(shape)
        if row["kind"] == "checkpoint":
            image = restorer.restore(image)
        target = np.frombuffer(item["target"], np.uint8).reshape(shape)
        x, y = to_tensor([image]), to_tensor([target])
        for name, scorer in scorers.items():
            tick = time.perf_counter()
            scorer(x, y if name in reference else None)
            cost[name] += time.perf_counter() - tick
    return time.perf_counter() - start, cost


def run_ray(
    cfg: FairweatherConfig,
    rows: list[dict],
    ckpt: CheckpointRef,
    metrics: tuple,
    reference: tuple,
    actors: int,
) -> float:
    ev = dataclasses.replace(cfg.evaluate, concurrency=actors, num_cpus_per_actor=1.0)
    cfg = dataclasses.replace(cfg, evaluate=ev)
    start = time.perf_counter()
    done = 0
    for batch in evaluation_dataset(cfg, rows, [ckpt], metrics, reference).iter_batches(
        batch_size=None, batch_format="pyarrow"
    ):
        done += batch.num_rows
    assert done == len(rows), (done, len(rows))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=96, help="test images (default 96; 2 rows each)")
    parser.add_argument("--base-images", type=int, default=24, help="images of the start-up run (default 24)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("overrides", nargs="*", help="config overrides (smoke profile)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_test_set(root, args.images, args.size)
        cfg = load_config(
            "smoke", [f"data.tables={root}/tables", f"runtime.runs_dir={root}/runs", *args.overrides]
        )
        ckpt = CheckpointRef("bench", make_checkpoint(cfg, root / "ckpt"), "bench")
        metrics = tuple(
            m for m in ("piqe", "niqe") if not missing_weights(m, cfg.evaluate.scorer, vlm=cfg.vlm)
        )
        reference = ("psnr", "ssim")
        test_set = list_test_set("paired:test", TableStore(cfg.data.tables))
        full, _ = work_rows([test_set], [ckpt.name], {}, include_input=True, examples=0)
        base = full[: 2 * args.base_images]
        print(
            f"{args.images} images of {args.size}x{args.size}, {len(full)} rows (input + checkpoint), "
            f"metrics {metrics + reference}, {machine_cpus()} CPUs"
        )
        results = {}
        loop_base, _ = run_loop(cfg, base, ckpt.path, metrics, reference)
        loop_full, cost = run_loop(cfg, full, ckpt.path, metrics, reference)
        results["loop"] = (loop_base, loop_full)
        for actors in (1, 2):
            # Logical CPUs: both pools' actors plus one for the read tasks, as the stage's budget check asks.
            ray.init(address="local", num_cpus=2 * actors + 1, include_dashboard=False, log_to_driver=False)
            try:
                results[f"ray x{actors}"] = tuple(
                    run_ray(cfg, rows, ckpt, metrics, reference, actors) for rows in (base, full)
                )
            finally:
                ray.shutdown()
        marginal_loop = (len(full) - len(base)) / (loop_full - loop_base)
        for name, (sec_base, sec_full) in results.items():
            marginal = (len(full) - len(base)) / (sec_full - sec_base)
            print(
                f"{name:>8}: {len(full) / sec_full:7.2f} rows/s end to end ({sec_full:6.1f} s), marginal "
                f"{marginal:7.2f} rows/s = {marginal / marginal_loop:4.2f}x the loop"
            )
        total = sum(cost.values())
        print(
            "loop cost split per metric: "
            + ", ".join(
                f"{name} {seconds / len(full) * 1000:.1f} ms/row ({seconds / total:.0%})"
                for name, seconds in cost.most_common()
            )
        )


if __name__ == "__main__":
    main()
