"""Evaluation on big and on small photos: rows/s and peak memory of the Ray pipeline vs. the same work in a plain loop.

    .venv/bin/python benchmarks/bench_evaluate_big.py                     # 6 x 24 Mpx and 200 x 0.15 Mpx
    .venv/bin/python benchmarks/bench_evaluate_big.py --cases small --small 400
    .venv/bin/python benchmarks/bench_evaluate_big.py --data /tmp/beb       # keep the generated photos for reruns

Generates paired test sets (clean photos: the bundled ones resized, inputs: the same plus noise, JPEG quality 95)
of ``--big`` photos of ``--big-size`` (default 6 photos of 6000 x 4000 = 24 Mpx) and ``--small`` photos of
``--small-size`` (200 of 480 x 320 = 0.15 Mpx), and a checkpoint of the smoke profile's network (tiled restore at
its ``model.tile``). Every (image, method) row for the methods ``input`` and the checkpoint is scored with the
smoke profile's metrics (PIQE; PSNR and SSIM against the targets), by

- ``loop``: the engine's in-process path (``restore_and_score_here``: read, restore, score, one row at a time) in
  one process with one torch thread, and
- ``ray``: the evaluation stage's Ray Data pipeline (``evaluation_dataset``: read tasks -> 1 restore actor -> 1
  score actor, 1 CPU and 1 torch thread each) on a private local Ray of 3 logical CPUs (the two actors and the
  read tasks, as the stage's budget check asks); with the override ``evaluate.one_actor=true``: read tasks -> 1
  actor that restores and scores each photo.

Each run is a fresh process (so one run's memory cannot hide in the next), on the first ``--*-base`` images and
on all of them; the table gives end-to-end rows/s (start-up, model and scorer loading included), marginal rows/s =
(rows(all) - rows(base)) / (seconds(all) - seconds(base)) (the rate once start-up is paid) with the ratio to the
loop, and the peak over the run of the memory summed over the run's processes (its own, and for Ray the raylet,
GCS, read-task workers and actors, sampled with psutil every 0.2 s): RSS (what ``ps`` shows; shared pages such as
torch's libraries and Ray's object store count once per process that maps them) and PSS (each shared page divided
among the processes sharing it: the memory the run really takes). The 1-minute load average is printed per run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil

CASES = ("big", "small")


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def make_test_set(root: Path, count: int, size: tuple[int, int]) -> None:
    """``count`` pairs under ``root`` (``input/``, ``target/``, a ``paired`` table of split test)."""
    import pyarrow as pa
    from PIL import Image

    from fairweather.contracts.tables import TableStore
    from fairweather.synth.clean import bundled_clean_photos

    photos = bundled_clean_photos()
    rng = np.random.default_rng(0)
    rows = []
    for kind in ("input", "target"):
        (root / kind).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        _, data = photos[i % len(photos)]
        clean = Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        clean.save(root / "target" / f"{i:05d}.jpg", quality=95)
        noisy = np.asarray(clean, dtype=np.int16) + rng.integers(
            -20, 21, (size[1], size[0], 3), dtype=np.int16
        )
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(root / "input" / f"{i:05d}.jpg", quality=95)
        del clean, noisy
        rows.append(
            {
                "pair_id": f"bench/{i:05d}",
                "dataset": "bench",
                "split": "test",
                "weather": ("rain", "haze", "snow")[i % 3],
                "input_uri": f"../input/{i:05d}.jpg",
                "target_uri": f"../target/{i:05d}.jpg",
                "width": size[0],
                "height": size[1],
                "created_at": datetime.now(timezone.utc),
            }
        )
    TableStore(str(root / "tables")).write("paired", pa.Table.from_pylist(rows))


def make_checkpoint(cfg, folder: Path) -> str:
    import torch

    from fairweather.contracts.config import to_dict
    from fairweather.models import build_model
    from fairweather.training.state import FORMAT_VERSION, save_state

    torch.manual_seed(0)
    weights = build_model(cfg.model).state_dict()
    state = {"format": FORMAT_VERSION, "arch": cfg.model.arch, "model": weights, "teacher": weights}
    save_state({**state, "prompt_context": None, "step": 0, "config": to_dict(cfg)}, folder)
    return str(folder)


class MemorySampler:
    """Peak over time of the RSS and PSS summed over this process and every process below it."""

    def __init__(self, period: float = 0.2):
        self.period, self.rss, self.pss = period, 0, 0
        #: pid -> (what it is: its latest title, e.g. ``ray::MapWorker(MapBatches(ScoreActor))``, peak RSS)
        self.by_process: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            rss = pss = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    info = proc.memory_full_info()
                    name = " ".join(proc.cmdline()[:1]).rsplit("/", 1)[-1].split(".")[0][:48] or proc.name()
                except (psutil.Error, OSError):
                    continue
                rss, pss = rss + info.rss, pss + info.pss
                name = "this process" if proc.pid == me.pid else name
                before = self.by_process.get(proc.pid, ("", 0))
                title = before[0] if name == "ray::IDLE" and before[0] else name
                self.by_process[proc.pid] = (title, max(before[1], info.rss))
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            self._stop.wait(self.period)


def child(args: argparse.Namespace) -> None:
    """One run in this fresh process: side ``--child`` on the first ``--images`` images of ``--root``; prints JSON."""
    start = time.perf_counter()
    with MemorySampler() as memory:
        from fairweather.contracts.config import load_config
        from fairweather.contracts.tables import TableStore
        from fairweather.stages.engine.rows import CheckpointRef
        from fairweather.stages.evaluate.io import list_test_set, work_rows

        root = Path(args.root)
        cfg = load_config(
            "smoke",
            [f"data.tables={root}/tables", f"runtime.runs_dir={root}/runs", "evaluate.concurrency=1",
             "evaluate.num_cpus_per_actor=1", *args.overrides],
        )  # fmt: skip
        ckpt = CheckpointRef("bench", str(root / "ckpt"), "bench")
        test_set = list_test_set("paired:test", TableStore(cfg.data.tables))
        rows, _ = work_rows([test_set], [ckpt.name], {}, include_input=True, examples=0)
        rows = rows[: 2 * args.images]
        from fairweather.metrics import missing_weights

        runnable = [
            m for m in cfg.evaluate.metrics if not missing_weights(m, cfg.evaluate.scorer, vlm=cfg.vlm)
        ]
        metrics, reference = tuple(runnable), tuple(cfg.evaluate.reference_metrics)
        if args.child == "loop":
            import torch

            from fairweather.metrics import build_scorers
            from fairweather.stages.engine.score import restore_and_score_here
            from fairweather.training.restorer import load_restorer

            torch.set_num_threads(1)
            scored = restore_and_score_here(
                rows,
                restorers={ckpt.name: load_restorer(ckpt.path, device="cpu")},
                scorers=build_scorers(metrics, cfg.evaluate.scorer),
                reference=build_scorers(reference, cfg.evaluate.scorer),
                max_pixels=cfg.data.max_image_pixels,
                short_side=None,
                chunk=1,
            )
            done = sum(row["status"] == "ok" for row in scored)
        else:
            import ray

            from fairweather.stages.evaluate.driver import evaluation_dataset

            ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
            try:
                done = 0
                dataset = evaluation_dataset(cfg, rows, [ckpt], metrics, reference)
                for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                    done += sum(status == "ok" for status in batch.column("status").to_pylist())
            finally:
                ray.shutdown()
    seconds = time.perf_counter() - start
    print(json.dumps({"metrics": [*metrics, *reference], "rows": len(rows), "ok": done, "seconds": seconds, "rss": memory.rss, "pss": memory.pss,
                      "by_process": memory.by_process, "torch_here": "torch" in sys.modules}))  # fmt: skip


def run_child(side: str, root: Path, images: int, overrides: list[str]) -> dict:
    load = os.getloadavg()[0]
    command = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--root",
        str(root),
        "--images",
        str(images),
        *overrides,
    ]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{side} run failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load"] = max(load, os.getloadavg()[0])
    if side == "loop" and images > 0:
        print(f"  metrics: {', '.join(result['metrics'])}")
    top = sorted(result["by_process"].values(), key=lambda kv: -kv[1])[:6]
    print(f"  {side:>4} x {images:>3} images: {result['rows']} rows ({result['ok']} ok) in {result['seconds']:.1f} s, "
          f"peak RSS sum {result['rss'] / 2**30:.2f} GiB, PSS sum {result['pss'] / 2**30:.2f} GiB, load "
          f"{result['load']:.1f}; this process imported torch: {result['torch_here']}; largest: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in top), flush=True)  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default="big,small", help="comma-separated: big, small (default both)")
    parser.add_argument("--big", type=int, default=6, help="photos of the big case (default 6)")
    parser.add_argument("--big-base", type=int, default=1, help="photos of its start-up run (default 1)")
    parser.add_argument(
        "--big-size", default="6000x4000", help="WxH of the big case (default 6000x4000, 24 Mpx)"
    )
    parser.add_argument("--small", type=int, default=200, help="photos of the small case (default 200)")
    parser.add_argument("--small-base", type=int, default=50, help="photos of its start-up run (default 50)")
    parser.add_argument("--small-size", default="480x320", help="WxH of the small case (default 480x320)")
    parser.add_argument("--sides", default="loop,ray", help="comma-separated: loop, ray (default both)")
    parser.add_argument("--data", help="folder for the generated photos (kept and reused; default temporary)")
    parser.add_argument("--prepare", action="store_true", help="only generate the photos (with --data)")
    parser.add_argument("--child", choices=("loop", "ray"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides (smoke profile), e.g. model.tile=512")
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return

    from fairweather.contracts.config import load_config

    with tempfile.TemporaryDirectory(prefix="bench-evaluate-big-") as tmp:
        data = Path(args.data or tmp)
        table = ["| case | side | rows | end-to-end rows/s | marginal rows/s | / loop | peak RSS sum | peak PSS sum | load |",
                 "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for case in args.cases.split(","):
            count, base = (args.big, args.big_base) if case == "big" else (args.small, args.small_base)
            size = parse_size(args.big_size if case == "big" else args.small_size)
            root = data / f"{case}-{size[0]}x{size[1]}-{count}"
            if not (root / "tables").exists():
                print(f"generating {count} pairs of {size[0]}x{size[1]} in {root}", flush=True)
                make_test_set(root, count, size)
                make_checkpoint(load_config("smoke", [f"runtime.runs_dir={root}/runs"]), root / "ckpt")
            if args.prepare:
                continue
            print(f"{case}: {count} photos of {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.2f} Mpx), "
                  f"{os.cpu_count()} cores", flush=True)  # fmt: skip
            marginal = {}
            for side in args.sides.split(","):
                small_run = run_child(side, root, base, args.overrides)
                full = run_child(side, root, count, args.overrides)
                rate = (full["rows"] - small_run["rows"]) / (full["seconds"] - small_run["seconds"])
                marginal[side] = rate
                ratio = f"{rate / marginal['loop']:.2f}x" if "loop" in marginal else "-"
                peak_rss = max(small_run["rss"], full["rss"]) / 2**30
                peak_pss = max(small_run["pss"], full["pss"]) / 2**30
                table.append(
                    f"| {case} ({count} x {size[0] * size[1] / 1e6:.2f} Mpx) | {side} | {full['rows']} | "
                    f"{full['rows'] / full['seconds']:.3f} | {rate:.3f} | {ratio} | {peak_rss:.2f} GiB | "
                    f"{peak_pss:.2f} GiB | {min(small_run['load'], full['load']):.1f}-"
                    f"{max(small_run['load'], full['load']):.1f} |"
                )
        print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
