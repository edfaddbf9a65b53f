"""Steps/s of the Ray Train loop (``fairweather train``) vs. the same training in a plain ``torch.distributed`` script.

    .venv/bin/python benchmarks/bench_train.py                       # smoke NAFNet, 2 gloo workers x 1 CPU
    .venv/bin/python benchmarks/bench_train.py train.iterations_per_round=200 train.batch_size=4
    .venv/bin/python benchmarks/bench_train.py --ray-log-every 20,2  # the cost of reporting often
    .venv/bin/python benchmarks/bench_train.py --gpu                 # NCCL + bf16, and images/s per backbone

Generates pairs with ``run_synth`` in a temporary folder, then trains the same model on the same data, side by side
in one run (this machine is noisy, so only figures from one run are compared):

- ``plain``: ``torch.multiprocessing`` spawns the workers, ``torch.distributed`` (gloo, or NCCL with ``--gpu``) and
  ``DistributedDataParallel`` join them, and each runs the Ray worker's loop from the same science pieces
  (``build_training_parts``, ``build_optimizer`` / ``build_scheduler``, ``fairweather.training.loop``: the rank's
  ``ShardSampler`` / ``PairedBatches`` / ``RealBatches`` stream behind a ``BatchPrefetcher``, ``train_step`` +
  ``ema_update`` per iteration, the same loss reduction every ``train.log_every`` steps), but with no checkpoint,
  validation or test scoring.
- ``ray``: ``run_train`` with a ``DiskLogger`` on a private local Ray of ``--num-cpus`` CPUs: Ray start-up, the
  datasets, the workers, every report, the final checkpoint with its validation, and the final test scoring.

Steady-state steps/s is timed on rank 0 from the end of step ``--warmup`` to the end of the last step (a step hook
records ``time.perf_counter()``; both sides use the same hook), so start-up and the final checkpoint are excluded
and what remains is the steps, the loader, and (Ray) the reports in between. The data-wait fraction is the time a
step waited for its batch over wait + compute (rank 0, windows after the warm-up; target < 5 %). End-to-end is the
wall time of each side as a user sees it (see above for what each includes).

``ray.train.report`` is not free: each call is a barrier of all ranks through Ray's synchronisation actor, and its
result queue holds one report, which the controller drains once per ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s by
default). A report every step therefore blocks about that long; ``train.log_every`` (report every N steps) keeps
reports rarer than the controller's poll. ``--ray-log-every`` runs the Ray side once per value to show the effect.

``--gpu`` (only where CUDA exists) runs both sides with NCCL, bf16 autocast and channels-last on
``min(--workers, GPUs)`` workers at the paper profile's crop and batch, then the images/s of one GPU training step of
each backbone at the paper profile's sizes (L_sup only; ``clip_prior`` needs the paper's CLIP in the model cache).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from fairweather.contracts.config import FairweatherConfig, load_config
from fairweather.contracts.metric_logger import DiskLogger
from fairweather.contracts.tables import TableStore
from fairweather.data.views import paired_view, real_view
from fairweather.stages.synth.driver import run_synth
from fairweather.stages.train.driver import run_train
from fairweather.training.ema import ema_update
from fairweather.training.loop import Window, batch_stream, iterate, memory_format
from fairweather.training.optim import build_optimizer, build_scheduler
from fairweather.training.setup import build_training_parts
from fairweather.training.step import TrainBatch, train_step

#: Arches timed by ``--gpu`` at the paper profile's sizes.
BACKBONES = ("msbdn", "restormer", "nafnet", "promptir", "clip_prior")


def record_time(folder: str, rank: int, step: int, pair_ids: list[str], real_ids: list | None = None) -> None:
    """Step hook of both sides: append ``"<step> <perf_counter>"`` to ``<folder>/times-<rank>.txt``."""
    with open(f"{folder}/times-{rank}.txt", "a") as out:
        out.write(f"{step} {time.perf_counter()}\n")


def steady_steps_per_s(folder: Path, warmup: int) -> float:
    """Rank 0's steps/s from the end of step ``warmup`` to the end of its last step."""
    times = dict(line.split() for line in (folder / "times-0.txt").read_text().splitlines())
    last = max(int(step) for step in times)
    return (last - warmup) / (float(times[str(last)]) - float(times[str(warmup)]))


def wait_fraction(metrics: list[dict], warmup: int) -> float:
    """Mean data-wait fraction of the report windows that start after step ``warmup``, weighted by their steps."""
    windows, previous = [], 0
    for m in sorted((m for m in metrics if "data_wait_fraction" in m), key=lambda m: m["step"]):
        if previous >= warmup:
            windows.append((m["step"] - previous, m["data_wait_fraction"]))
        previous = m["step"]
    return sum(n * f for n, f in windows) / max(1, sum(n for n, _ in windows)) if windows else float("nan")


def plain_worker(rank: int, world: int, cfg: FairweatherConfig, rows: dict, port: int, folder: str) -> None:
    """One rank of the baseline: the Ray worker's loop with ``torch.distributed`` in place of Ray Train."""
    train = cfg.train
    cuda = train.scaling.use_gpu
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(max(1, int(train.scaling.cpus_per_worker)))
    parts = build_training_parts(cfg, device)
    optimizer, step = build_optimizer(parts.model, train), 0
    scheduler = build_scheduler(optimizer, train)
    model = DistributedDataParallel(
        parts.model.to(memory_format=memory_format(cfg, device)), device_ids=[rank] if cuda else None
    )
    loader = batch_stream(cfg, rows["paired"], rows["real"], rank, world, step)
    window, reported = Window(), []
    try:
        while step < train.total_steps:
            window.add(iterate(cfg, parts, model, optimizer, scheduler, loader, step, device))
            step += 1
            record_time(folder, rank, step, [])
            if step % train.log_every == 0 or step == train.total_steps:
                reported.append({**window.metrics(parts.loss.names, world), "step": step})
                window = Window()
    finally:
        loader.close()
        dist.destroy_process_group()
    if rank == 0:
        Path(folder, "metrics.json").write_text(json.dumps(reported))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_plain(cfg: FairweatherConfig, folder: Path) -> list[dict]:
    """Train with ``torch.distributed`` on ``train.scaling.num_workers`` spawned processes; rank 0's metrics."""
    store = TableStore(os.path.abspath(cfg.data.tables))
    rows = {"paired": paired_view(store, "train").to_pylist(), "real": real_view(store, None).to_pylist()}
    world = cfg.train.scaling.num_workers
    # As torchrun and Ray do for their workers: OpenMP threads = the worker's CPUs (else every rank's OpenMP
    # pools spin on every core). The children read it at start; the parent's own value is restored after.
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(max(1, int(cfg.train.scaling.cpus_per_worker)))
    try:
        mp.spawn(plain_worker, args=(world, cfg, rows, free_port(), str(folder)), nprocs=world, join=True)
    finally:
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    return json.loads((folder / "metrics.json").read_text())


def run_ray(cfg: FairweatherConfig, folder: Path) -> list[dict]:
    """``run_train`` on a private local Ray; rank 0's reported metrics."""
    logger = DiskLogger(folder / "log")
    run_train(cfg, logger, step_hook=functools.partial(record_time, str(folder)))
    return logger.read_metrics()


def measure(name: str, run, cfg: FairweatherConfig, folder: Path, warmup: int) -> dict:
    folder.mkdir(parents=True)
    start = time.perf_counter()
    metrics = run(cfg, folder)
    row = {
        "side": name,
        "steps_per_s": steady_steps_per_s(folder, warmup),
        "end_to_end_s": time.perf_counter() - start,
        "wait": wait_fraction(metrics, warmup),
    }
    print(f"\n{name}: {row['steps_per_s']:.2f} steps/s steady, {row['end_to_end_s']:.1f} s end-to-end, "
          f"data wait {100 * row['wait']:.1f} %", flush=True)  # fmt: skip
    return row


def best(runs: list[dict]) -> dict:
    """A side over its repeats: the fastest steady rate (least disturbed by other load), every rate, the shortest
    end-to-end time and the largest data-wait fraction."""
    return {
        "steps_per_s": max(r["steps_per_s"] for r in runs),
        "all": [r["steps_per_s"] for r in runs],
        "end_to_end_s": min(r["end_to_end_s"] for r in runs),
        "wait": max(r["wait"] for r in runs),
    }


def markdown_table(sides: dict[str, dict], images_per_step: int) -> str:
    plain = sides["plain"]["steps_per_s"]
    lines = [
        "| side | steady steps/s (best; all) | images/s | / plain | end-to-end s | data wait |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in sides.items():
        rates = ", ".join(f"{v:.2f}" for v in r["all"])
        lines.append(
            f"| {name} | {r['steps_per_s']:.2f}; {rates} | {r['steps_per_s'] * images_per_step:.1f} | "
            f"{r['steps_per_s'] / plain:.2f}x | {r['end_to_end_s']:.1f} | {100 * r['wait']:.1f} % |"
        )
    return "\n".join(lines)


def backbone_images_per_s(args: argparse.Namespace, tmp: str) -> None:
    """``--gpu``: images/s of one GPU's training step (bf16, channels-last, L_sup) per backbone at paper sizes."""
    device = torch.device("cuda", 0)
    print("\n| backbone (paper size) | params (M) | images/s |\n|---|---|---|")
    for arch in BACKBONES:
        overrides = [f"model.arch={arch}", f"runtime.runs_dir={tmp}/paper-runs", "train.real_batch_size=0"]
        overrides += [f"loss.weights.{term}=0" for term in ("ps", "wpl", "sem", "feat", "srd")]
        cfg = load_config("paper", overrides)
        train = cfg.train
        try:
            parts = build_training_parts(cfg, device)
        except Exception as err:  # e.g. clip_prior without the paper's CLIP in the model cache
            print(f"| {arch} | - | skipped: {type(err).__name__}: {err} |")
            continue
        parts.model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(parts.model, train)
        shape = (train.batch_size, 3, train.crop_size, train.crop_size)
        batch = TrainBatch(torch.rand(shape), torch.rand(shape)).to(device, torch.channels_last)

        start = 0.0
        for i in range(args.warmup + args.gpu_steps):
            if i == args.warmup:
                torch.cuda.synchronize(device)
                start = time.perf_counter()
            train_step(parts.model, parts.loss, optimizer, batch, step=i, autocast_dtype=torch.bfloat16)
            ema_update(parts.teacher, parts.model, train.ema_decay)
        torch.cuda.synchronize(device)
        rate = args.gpu_steps * train.batch_size / (time.perf_counter() - start)
        params = sum(p.numel() for p in parts.model.parameters() if p.requires_grad) / 1e6
        print(f"| {arch} | {params:.1f} | {rate:.1f} |", flush=True)
        del parts, optimizer, batch
        torch.cuda.empty_cache()


def base_overrides(args: argparse.Namespace, tmp: str) -> list[str]:
    """A short L_sup run on generated pairs (no labeled real images: the real-domain terms would not apply)."""
    overrides = [
        f"runtime.runs_dir={tmp}/runs",
        f"runtime.storage_path={tmp}/train",
        f"runtime.num_cpus={args.num_cpus}",
        f"data.tables={tmp}/tables",
        f"data.pool={tmp}/data/pool",
        f"synth.out={tmp}/data",
        "synth.num_paired=120",
        "synth.num_unlabeled=0",
        "synth.size=[96,96]",
        "loss.weights.ps=0",
        "loss.weights.wpl=0",
        "loss.weights.sem=0",
        "loss.weights.feat=0",
        "train.rounds=1",
        "train.iterations_per_round=80",
        "train.real_batch_size=0",
        "train.log_every=20",
        "train.checkpoint_every=1000000",  # only the final checkpoint: steady state has no checkpoint in it
        "train.val_images=4",
        "train.val_real_images=0",
        "train.loader_threads=1",
        f"train.scaling.num_workers={args.workers}",
        "train.scaling.cpus_per_worker=1",
    ]
    if args.gpu:
        overrides += ["train.scaling.use_gpu=true", "train.bf16=true", "train.channels_last=true"]
        overrides += ["train.crop_size=256", "train.batch_size=8", "synth.size=[256,256]"]
        overrides += [f"train.scaling.cpus_per_worker={max(1, args.num_cpus // args.workers)}"]
    return overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="smoke", help="profile or YAML (default smoke: NAFNet on CPU)")
    parser.add_argument("--workers", type=int, default=2, help="DDP workers of both sides (default 2)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the private local Ray (default 2)")
    parser.add_argument(
        "--warmup", type=int, default=10, help="steps left out of the steady rate (default 10)"
    )
    parser.add_argument(
        "--ray-log-every",
        default="",
        help="comma-separated train.log_every values: one Ray run each (default: the config's value only)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating (default 2)")
    parser.add_argument("--gpu", action="store_true", help="NCCL + bf16 on CUDA, and images/s per backbone")
    parser.add_argument("--gpu-steps", type=int, default=20, help="timed steps per backbone with --gpu")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.batch_size=4"
    )
    args = parser.parse_args(argv)
    if args.gpu:
        if not torch.cuda.is_available():
            print("--gpu: this machine has no CUDA device; nothing measured (run it on a GPU node)")
            return
        args.workers = min(args.workers, torch.cuda.device_count())

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        overrides = [*base_overrides(args, tmp), *args.overrides]
        cfg = load_config(args.config, overrides)
        train = cfg.train
        if train.total_steps <= args.warmup or cfg.loss.weights.wpl > 0:
            parser.error("needs train.rounds x iterations_per_round > --warmup, and loss.weights.wpl=0 (the "
                         "baseline has no stage-1 prompts)")  # fmt: skip
        run_synth(cfg)
        backend = "nccl + bf16" if args.gpu else "gloo"
        print(f"\n{cfg.model.arch}, {train.total_steps} steps ({args.warmup} warm-up), {args.workers} {backend} "
              f"workers x {train.scaling.cpus_per_worker:g} CPU, batch {train.batch_size} + {train.real_batch_size} "
              f"real, crop {train.crop_size}, log_every {train.log_every}, {args.num_cpus} Ray CPUs\n", flush=True)  # fmt: skip
        everies = [int(v) for v in args.ray_log_every.split(",") if v] or [train.log_every]
        sides = {"plain": (run_plain, lambda r: cfg)}
        for every in everies:
            name = "ray" if len(everies) == 1 else f"ray, log_every {every}"
            # A run name per repeat: rerunning a finished name would resume it and train nothing.
            sides[name] = (
                run_ray,
                lambda r, every=every: load_config(
                    args.config, [*overrides, f"train.log_every={every}", f"train.run_name=bench-{every}-{r}"]
                ),
            )
        runs: dict[str, list[dict]] = {name: [] for name in sides}
        for repeat in range(args.repeats):
            # plain, ray, ray, plain, ...: a slow drift of the machine's load hits both sides alike.
            for name in list(sides)[:: 1 if repeat % 2 == 0 else -1]:
                run, side_cfg = sides[name]
                folder = Path(tmp, f"{name.replace(' ', '').replace(',', '-')}-{repeat}")
                runs[name].append(measure(name, run, side_cfg(repeat), folder, args.warmup))
        summary = {name: best(side_runs) for name, side_runs in runs.items()}
        images = args.workers * (train.batch_size + train.real_batch_size)
        print(f"\n{markdown_table(summary, images)}\n")
        for name in list(summary)[1:]:
            ratio = summary[name]["steps_per_s"] / summary["plain"]["steps_per_s"]
            print(f"{name} / plain steady steps/s: {ratio:.2f}x (target >= 0.95x); data wait target < 5 %")
        if args.gpu:
            backbone_images_per_s(args, tmp)


if __name__ == "__main__":
    main()
