"""Throughput of a pseudo-label pool update: Ray Data (1 and 2 actors per pool) vs. the same work in a plain loop.

    .venv/bin/python benchmarks/bench_pseudolabel.py            # ~4 min on 2 cores

Generates a labeled pool (``pool`` + ``labels`` rows) and a checkpoint of the smoke profile's network, then makes
every image's ``ema@round-1`` candidate: restore (EMA teacher, tiled), store the lossless PNG (content-addressed),
score with the smoke profile's selection scorers (PIQE and r_vlm on the tiny VLM), side by side:
``loop`` (read, decode, restore, write, then each scorer, one image at a time in this process, torch on 1 thread)
and ``ray x1`` / ``ray x2`` (:func:`fairweather.stages.pseudolabel.driver.pseudolabel_dataset`: 1 / 2 restore actors and
1 / 2 score actors, 1 CPU and 1 torch thread each, on a private local Ray). Like ``bench_evaluate.py`` each runs on
``--base-images`` and on ``--images`` images and it prints end-to-end and marginal images/s (the rate once
start-up is paid) with the ratios to the loop, and the cost split restore / store / each scorer of the loop and of
the Ray run (seconds summed over the actors, as the stage reports them).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
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
from fairweather.contracts.io import write_if_changed
from fairweather.contracts.tables import TableStore
from fairweather.data.batches import to_tensor
from fairweather.data.views import real_view
from fairweather.metrics import build_scorer
from fairweather.models import build_model
from fairweather.stages.engine.rows import KIND_CHECKPOINT, read_one
from fairweather.stages.infra.cpus import machine_cpus
from fairweather.stages.pseudolabel.driver import candidates_dir, pseudolabel_dataset
from fairweather.stages.pseudolabel.io import Source, ema_source, encode_png, work_rows
from fairweather.training.restorer import load_restorer
from fairweather.training.state import FORMAT_VERSION, save_state


def make_pool(root: Path, count: int, size: int) -> None:
    """``count`` noisy scenes in ``root/pool/<weather>/`` with their ``pool`` and ``labels`` rows."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    now = datetime.now(timezone.utc)
    pool, labels = [], []
    for i in range(count):
        weather = ("rain", "haze", "snow")[i % 3]
        rgb = (
            np.stack([x, y, (x + y) / 2], -1) * 200
            + rng.uniform(0, 50, 3)
            + rng.normal(0, 20, (size, size, 3))
        )
        path = root / "pool" / weather / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(path)
        data = path.read_bytes()
        image_id = hashlib.sha256(data).hexdigest()
        pool.append({"image_id": image_id, "uri": str(path), "weather_hint": weather, "width": size,
                     "height": size, "bytes": len(data)})  # fmt: skip
        labels.append({"image_id": image_id, "labeler_fingerprint": "bench", "labeler_settings": "{}",
                       "uri": str(path), "model_id": "tiny:llava", "rating_prompt": "visibility",
                       "rating_prompt_version": "1", "description_prompt_version": "1", "probs": [0.2] * 5,
                       "rating_complete": True, "r_vlm": 3.0, "vlm_vis": 0.5, "description": weather,
                       "d_pos": "clear", "weather": weather, "weather_hint": weather, "labeled_at": now})  # fmt: skip
    store = TableStore(str(root / "tables"))
    store.write("pool", pa.Table.from_pylist(pool))
    store.write("labels", pa.Table.from_pylist(labels))


def make_checkpoint(cfg: FairweatherConfig, folder: Path) -> str:
    torch.manual_seed(0)
    weights = build_model(cfg.model).state_dict()
    state = {"format": FORMAT_VERSION, "arch": cfg.model.arch, "model": weights, "teacher": weights,
             "prompt_context": None, "step": 0, "config": to_dict(cfg)}  # fmt: skip
    save_state(state, folder)
    return str(folder)


def run_loop(cfg: FairweatherConfig, rows: list[dict], ckpt: str, out: Path) -> tuple[float, Counter]:
    """Seconds for every row in one process, and seconds per part (restore, store, each scorer)."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    restorer = load_restorer(ckpt, device="cpu")
    names = cfg.pseudo.scorer_names
    scorers = {
        name: build_scorer(name, cfg.pseudo.scorer, vlm=cfg.vlm, model_cache_dir=cfg.runtime.model_cache_dir)
        for name in names
    }
    cost: Counter = Counter()
    for row in rows:
        item = read_one(row, max_pixels=cfg.data.max_image_pixels, short_side=None)
        image = np.frombuffer(item["pixels"], np.uint8).reshape(item["height"], item["width"], 3)
        tick = time.perf_counter()
        image = restorer.restore(image)
        cost["restore"] += time.perf_counter() - tick
        tick = time.perf_counter()
        data = encode_png(image)
        write_if_changed(out / f"{hashlib.sha256(data).hexdigest()}.png", data)
        cost["store"] += time.perf_counter() - tick
        x = to_tensor([image])
        for name, scorer in scorers.items():
            tick = time.perf_counter()
            scorer(x)
            cost[f"score/{name}"] += time.perf_counter() - tick
    return time.perf_counter() - start, cost


def run_ray(cfg: FairweatherConfig, rows: list[dict], source: Source, actors: int) -> tuple[float, Counter]:
    ps = dataclasses.replace(
        cfg.pseudo, restore_concurrency=actors, score_concurrency=actors, num_cpus_per_actor=1.0
    )
    cfg = dataclasses.replace(cfg, pseudo=ps)
    start = time.perf_counter()
    done, cost = 0, Counter()
    for batch in pseudolabel_dataset(cfg, rows, [source]).iter_batches(
        batch_size=None, batch_format="pyarrow"
    ):
        for row in batch.to_pylist():
            assert row["status"] == "ok", row["message"]
            cost["restore"] += row["restore_seconds"]
            cost.update({f"score/{k}": v for k, v in json.loads(row["seconds"]).items()})
        done += batch.num_rows
    assert done == len(rows), (done, len(rows))
    return time.perf_counter() - start, cost


def split(cost: Counter, rows: int) -> str:
    total = sum(cost.values())
    return ", ".join(
        f"{name} {seconds / rows * 1000:.1f} ms/image ({seconds / total:.0%})"
        for name, seconds in cost.most_common()
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=192, help="pool images (default 192)")
    parser.add_argument("--base-images", type=int, default=48, help="images of the start-up run (default 48)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("overrides", nargs="*", help="config overrides (smoke profile)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_pool(root, args.images, args.size)
        cfg = load_config(
            "smoke",
            [
                f"data.tables={root}/tables",
                f"data.pool={root}/pool",
                f"runtime.runs_dir={root}/runs",
                *args.overrides,
            ],
        )
        source = Source(ema_source(1), KIND_CHECKPOINT, checkpoint=make_checkpoint(cfg, root / "ckpt"))
        images = real_view(TableStore(cfg.data.tables), None).to_pylist()
        full, _ = work_rows(images, [source], set(), lineage="bench", pool_root=cfg.data.pool)
        base = full[: args.base_images]
        (root / "loop").mkdir()
        print(
            f"{args.images} images of {args.size}x{args.size}, scorers {cfg.pseudo.scorer_names}, "
            f"{machine_cpus()} CPUs; candidates in {candidates_dir(cfg)}"
        )
        results, costs = {}, {}
        loop_base, _ = run_loop(cfg, base, source.checkpoint, root / "loop")
        loop_full, costs["loop"] = run_loop(cfg, full, source.checkpoint, root / "loop")
        results["loop"] = (loop_base, loop_full)
        for actors in (1, 2):
            # Logical CPUs: both pools' actors plus one for the read and store tasks (the stage's budget check).
            ray.init(address="local", num_cpus=2 * actors + 1, include_dashboard=False, log_to_driver=False)
            try:
                sec_base, _ = run_ray(cfg, base, source, actors)
                sec_full, costs[f"ray x{actors}"] = run_ray(cfg, full, source, actors)
                results[f"ray x{actors}"] = (sec_base, sec_full)
            finally:
                ray.shutdown()
        marginal_loop = (len(full) - len(base)) / (loop_full - loop_base)
        for name, (sec_base, sec_full) in results.items():
            marginal = (len(full) - len(base)) / (sec_full - sec_base)
            print(
                f"{name:>8}: {len(full) / sec_full:7.2f} images/s end to end ({sec_full:6.1f} s), marginal "
                f"{marginal:7.2f} images/s = {marginal / marginal_loop:4.2f}x the loop"
            )
        for name, cost in costs.items():
            print(f"cost split ({name}): {split(cost, len(full))}")


if __name__ == "__main__":
    main()
