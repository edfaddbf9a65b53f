"""Steps/s of the Ray Train loop (``fairweather train``) vs. the same training in a plain ``torch.distributed`` script.

    .venv/bin/python benchmarks/bench_train.py                       # smoke NAFNet, 2 gloo workers x 1 CPU, 5 repeats
    .venv/bin/python benchmarks/bench_train.py --repeats 7 train.iterations_per_round=200
    .venv/bin/python benchmarks/bench_train.py --ray-log-every 20,2  # the cost of reporting often
    .venv/bin/python benchmarks/bench_train.py --only plain --data /tmp/bt   # one side once (time the command)
    .venv/bin/python benchmarks/bench_train.py --profile /tmp/prof   # + py-spy of rank 0: where its CPU goes
    .venv/bin/python benchmarks/bench_train.py --gpu                 # NCCL + bf16, and images/s per backbone

Generates pairs with ``run_synth`` (in ``--data``, reused when it holds them, else a temporary folder), then trains
the same model on the same data with both sides, alternating ``--repeats`` times (plain, ray, ray, plain, ...):

- ``plain``: ``torch.multiprocessing`` spawns the workers, ``torch.distributed`` (gloo, or NCCL with ``--gpu``) and
  ``DistributedDataParallel`` join them, and each runs the Ray worker's loop (``stages/train/worker.py``) from the
  same science pieces: ``build_training_parts``, ``build_optimizer`` / ``build_scheduler``, and
  ``fairweather.training.loop`` (the rank's ``ShardSampler`` / ``PairedBatches`` / ``RealBatches`` stream behind a
  ``BatchPrefetcher``, ``iterate`` = ``train_step`` + ``ema_update``, ``Window.metrics`` = the loss all-reduce every
  ``train.log_every`` steps), the same thread settings (``torch.set_num_threads(cpus_per_worker)``,
  ``OMP_NUM_THREADS`` as Ray sets it, ``train.loader_threads`` loader threads) and the same step hook; no
  ``ray.train.report``, checkpoint, validation or test scoring. This script imports Ray only in the functions that
  use it, so the spawned workers (which import this module again) start without Ray.
- ``ray``: ``run_train`` with a ``DiskLogger`` on a private local Ray of ``--num-cpus`` CPUs: Ray start-up, the
  datasets, the workers, every report, the final checkpoint with its validation, and the final test scoring.

Steady-state steps/s is timed on rank 0 from the end of step ``--warmup`` to the end of the last step (a step hook
records ``time.perf_counter()``; both sides use the same hook), so start-up and the final checkpoint are excluded
and what remains is the steps, the loader, and (Ray) the reports in between. Each side's figure is the median over
its repeats, with min-max as the spread; the ratio is the median of the per-repeat ratios (ray_i / plain_i of the
same round, which cancels a slow drift of the machine) and the ratio of the medians.

To say where time goes, a sampler thread in this process reads every 0.5 s the CPU seconds of every process below
it (psutil: the spawned workers, or Ray's GCS, raylet, controller, train workers and idle workers), and the step
hook records the worker's own CPU seconds (``time.process_time``, all its threads) at each step: the table shows
CPU seconds per step of a training worker and the cores the other processes used during the steady window. On a
machine whose cores the workers fill (2 workers x 1 CPU on 2 cores), every core-second another process uses is
taken from the workers. The 1-minute load average is printed with each run; figures taken at a load above the
core count measure the neighbours as much as the code.

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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from fairweather.contracts.config import FairweatherConfig, load_config
from fairweather.contracts.tables import TableStore
from fairweather.data.views import paired_view, real_view
from fairweather.training.ema import ema_update
from fairweather.training.loop import Window, batch_stream, iterate
from fairweather.training.optim import build_optimizer, build_scheduler
from fairweather.training.setup import build_training_parts
from fairweather.training.step import TrainBatch, train_step

#: Arches timed by ``--gpu`` at the paper profile's sizes.
BACKBONES = ("msbdn", "restormer", "nafnet", "promptir", "clip_prior")


def record_time(folder: str, rank: int, step: int, pair_ids: list[str], real_ids: list | None = None) -> None:
    """Step hook of both sides: append ``"<step> <perf_counter> <process CPU s> <pid>"`` to ``times-<rank>.txt``."""
    with open(f"{folder}/times-{rank}.txt", "a") as out:
        out.write(f"{step} {time.perf_counter()} {time.process_time()} {os.getpid()}\n")


def read_times(folder: Path, rank: int = 0) -> dict[int, tuple[float, float, int]]:
    """``{step: (perf_counter, process CPU s, pid)}`` of a rank (the last line of a step wins after a restart)."""
    out = {}
    for line in (folder / f"times-{rank}.txt").read_text().splitlines():
        step, wall, cpu, pid = line.split()
        out[int(step)] = (float(wall), float(cpu), int(pid))
    return out


def wait_fraction(metrics: list[dict], warmup: int) -> float:
    """Mean data-wait fraction of the report windows that start after step ``warmup``, weighted by their steps."""
    windows, previous = [], 0
    for m in sorted((m for m in metrics if "data_wait_fraction" in m), key=lambda m: m["step"]):
        if previous >= warmup:
            windows.append((m["step"] - previous, m["data_wait_fraction"]))
        previous = m["step"]
    return sum(n * f for n, f in windows) / max(1, sum(n for n, _ in windows)) if windows else float("nan")


def process_kind(proc: psutil.Process, workers: set[int]) -> str:
    """What a process below the benchmark is: ``worker`` (a training rank), a Ray daemon or actor, or ``other``."""
    if proc.pid in workers:
        return "worker"
    try:
        words = " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return "other"
    for key, kind in (
        ("gcs_server", "gcs"),
        ("raylet", "raylet"),
        ("TrainController", "controller"),
        ("SynchronizationActor", "sync actor"),
        ("ray::IDLE", "idle workers"),
        ("log_monitor", "log monitor"),
        ("runtime_env", "agents"),
        ("dashboard", "agents"),
        ("ray::", "other ray"),
    ):
        if key in words:
            return kind
    return "other"


class CpuSampler:
    """CPU seconds (user + system) of this process and every process below it, sampled every ``period`` s."""

    def __init__(self, period: float = 0.5):
        self.period, self.samples = period, []  # [(perf_counter, {pid: cpu_s})]
        self.procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            now, cpu = time.perf_counter(), {}
            for proc in [me, *me.children(recursive=True)]:
                try:
                    times = proc.cpu_times()
                    cpu[proc.pid] = times.user + times.system
                    self.procs.setdefault(proc.pid, proc)
                except psutil.Error:
                    pass
            self.samples.append((now, cpu))
            self._stop.wait(self.period)

    def used(self, start: float, end: float) -> dict[int, float]:
        """CPU seconds per pid between the samples closest to ``start`` and ``end`` (a process seen at the end but
        not at the start started in between: all its CPU counts)."""
        first = min(self.samples, key=lambda s: abs(s[0] - start))[1]
        last = min(self.samples, key=lambda s: abs(s[0] - end))[1]
        return {pid: cpu - first.get(pid, 0.0) for pid, cpu in last.items()}


def steady(folder: Path, warmup: int, sampler: CpuSampler | None, world: int) -> dict:
    """Rank 0's steady steps/s, the workers' CPU seconds per step and the other processes' cores in that window."""
    ranks = [read_times(folder, rank) for rank in range(world)]
    times = ranks[0]
    last = max(times)
    (t0, c0, _), (t1, c1, _) = times[warmup], times[last]
    row = {"steps_per_s": (last - warmup) / (t1 - t0), "worker_cpu_per_step": (c1 - c0) / (last - warmup)}
    if sampler is not None:
        workers = {rank[last][2] for rank in ranks}
        used: dict[str, float] = {}
        for pid, cpu in sampler.used(t0, t1).items():
            kind = "driver" if pid == os.getpid() else process_kind(sampler.procs[pid], workers)
            used[kind] = used.get(kind, 0.0) + cpu
        row["cores"] = {kind: cpu / (t1 - t0) for kind, cpu in sorted(used.items())}
    return row


#: Categories of a profiled stack, first match wins: (name, substrings of the collapsed stack). Stacks that py-spy
#: counts as active but that wait in native code (a Ray worker's main thread in its task loop, a sample with no
#: Python frame, as ``--nonblocking`` sometimes reads) are left out as idle.
PROFILE_IDLE = ("Worker.main_loop (ray/", "__IDLE__")
PROFILE_CATEGORIES = (
    ("ray.train.report", ("report (ray/train", "_sync_checkpoint_dir_name", "_wait_then_report")),
    ("loader thread", ("_build (fairweather/data/batches.py", "fairweather-loader")),
    ("loss all-reduce (Window.metrics)", ("metrics (fairweather/training/loop.py",)),
    ("step hook", ("record_time",)),
    ("EMA update", ("ema_update",)),
    ("train step", ("train_step",)),
    ("waiting for a batch", ("__next__ (fairweather/data/batches.py",)),
    ("Ray's own threads (polls, gRPC, ...)", ("ray/",)),
)


def profile_rank0(folder: Path, warmup: int, steps: int, output: Path, stop: threading.Event) -> None:
    """Once rank 0 has done step ``warmup``, record its process with py-spy (on-CPU stacks, every thread, without
    pausing it) for about 90 % of the time its remaining steps take at its rate so far (so the final checkpoint
    stays out); ``output`` gets py-spy's collapsed stacks."""
    times = folder / "times-0.txt"
    while not stop.is_set():
        lines = times.read_text().splitlines() if times.exists() else []
        if len(lines) >= warmup:
            first, last = (float(line.split()[1]) for line in (lines[0], lines[-1]))
            seconds = max(1, int(0.9 * (steps - len(lines)) * (last - first) / max(1, len(lines) - 1)))
            pid = lines[-1].split()[3]
            py_spy = Path(sys.executable).with_name("py-spy")
            command = [str(py_spy), "record", "--pid", pid, "--nonblocking", "--threads", "--rate", "50"]
            command += ["--duration", str(seconds)]
            command += ["--nolineno", "--format", "raw", "--output", str(output)]
            subprocess.run(command, capture_output=True, check=False)
            return
        stop.wait(0.2)


def profile_split(path: Path) -> dict[str, float]:
    """Share of the samples per :data:`PROFILE_CATEGORIES` (``other`` for the rest) in py-spy's raw output."""
    counts: dict[str, float] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(key in stack for key in PROFILE_IDLE) or all(f.startswith("thread (") for f in frames):
            continue
        name = next((n for n, keys in PROFILE_CATEGORIES if any(k in stack for k in keys)), "other")
        counts[name] = counts.get(name, 0) + int(count)
    total = sum(counts.values()) or 1
    return {name: n / total for name, n in sorted(counts.items(), key=lambda kv: -kv[1])}


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
    model = DistributedDataParallel(parts.model, device_ids=[rank] if cuda else None)
    hook = functools.partial(record_time, folder)
    loader = batch_stream(cfg, rows["paired"], rows["real"], rank, world, step)
    window, reported = Window(), []
    try:
        while step < train.total_steps:
            iteration = iterate(cfg, parts, model, optimizer, scheduler, loader, step, device)
            step += 1
            window.add(iteration)
            hook(rank, step, iteration.pair_ids, iteration.real_ids)
            if step % train.log_every == 0 or step == train.total_steps:
                reported.append({**window.metrics(parts.loss.names, world), "step": step})
                window = Window()
    finally:
        loader.close()
        del model  # before the group: see gpu_check.section_ddp (the reducer must not outlive it)
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
    from fairweather.contracts.metric_logger import DiskLogger
    from fairweather.stages.train.driver import run_train

    logger = DiskLogger(folder / "log")
    run_train(cfg, logger, step_hook=functools.partial(record_time, str(folder)))
    return logger.read_metrics()


def measure(name: str, run, cfg: FairweatherConfig, folder: Path, warmup: int, profile: Path | None) -> dict:
    folder.mkdir(parents=True)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    stop, profiler = threading.Event(), None
    if profile is not None:
        output = profile / f"{folder.name}.txt"
        steps = cfg.train.total_steps
        profiler = threading.Thread(
            target=profile_rank0, args=(folder, warmup, steps, output, stop), daemon=True
        )
        profiler.start()
    with CpuSampler() as sampler:
        try:
            metrics = run(cfg, folder)
        finally:
            stop.set()
    if profiler is not None:
        profiler.join(timeout=60)
    row = {
        "side": name,
        **steady(folder, warmup, sampler, cfg.train.scaling.num_workers),
        "end_to_end_s": time.perf_counter() - start,
        "wait": wait_fraction(metrics, warmup),
        "load": max(load, os.getloadavg()[0]),
    }
    if profile is not None:
        row["profile"] = profile_split(output)
        print(
            "  rank 0 on-CPU samples: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in row["profile"].items())
        )
    others = ", ".join(f"{k} {v:.2f}" for k, v in row["cores"].items() if k != "worker" and v >= 0.005)
    print(f"{name}: {row['steps_per_s']:.3f} steps/s steady, worker {row['worker_cpu_per_step']:.3f} CPU s/step, "
          f"{row['end_to_end_s']:.1f} s end-to-end, data wait {100 * row['wait']:.1f} %, load {row['load']:.1f}; "
          f"cores used by workers {row['cores'].get('worker', 0):.2f}, others: {others or '-'}", flush=True)  # fmt: skip
    return row


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def markdown_table(runs: dict[str, list[dict]], images_per_step: int) -> str:
    plain = runs["plain"]
    lines = [
        "| side | steady steps/s: median (min-max) | images/s | / plain: median of paired ratios (min-max) | "
        "worker CPU s/step | other processes' cores | end-to-end s: median (min-max) | data wait | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, side in runs.items():
        rates = [r["steps_per_s"] for r in side]
        ratios = [r["steps_per_s"] / p["steps_per_s"] for r, p in zip(side, plain, strict=False)]
        kinds = sorted({k for r in side for k in r["cores"] if k != "worker"})
        others = ", ".join(
            f"{k} {statistics.median(r['cores'].get(k, 0.0) for r in side):.2f}" for k in kinds
        )
        lines.append(
            f"| {name} | {spread(rates)} | {statistics.median(rates) * images_per_step:.1f} | {spread(ratios)} | "
            f"{spread([r['worker_cpu_per_step'] for r in side])} | {others or '-'} | "
            f"{spread([r['end_to_end_s'] for r in side])} | {100 * max(r['wait'] for r in side):.1f} % | "
            f"{min(r['load'] for r in side):.1f}-{max(r['load'] for r in side):.1f} |"
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


def base_overrides(args: argparse.Namespace, data: str, runs: str) -> list[str]:
    """A short L_sup run on generated pairs (no labeled real images: the real-domain terms would not apply)."""
    overrides = [
        f"runtime.runs_dir={runs}/runs",
        f"runtime.storage_path={runs}/train",
        f"runtime.num_cpus={args.num_cpus}",
        f"data.tables={data}/tables",
        f"data.pool={data}/data/pool",
        f"synth.out={data}/data",
        "synth.num_paired=120",
        "synth.num_unlabeled=0",
        "synth.size=[96,96]",
        "loss.weights.ps=0",
        "loss.weights.wpl=0",
        "loss.weights.sem=0",
        "loss.weights.feat=0",
        "train.rounds=1",
        "train.iterations_per_round=100",
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
    parser.add_argument("--repeats", type=int, default=5, help="runs of each side, alternating (default 5)")
    parser.add_argument("--only", choices=("plain", "ray"), help="run this side once (to time the command)")
    parser.add_argument(
        "--data", help="folder of the generated pairs (made once, then reused; default: temporary)"
    )
    parser.add_argument(
        "--profile", help="folder: py-spy records rank 0 of every run after the warm-up (collapsed stacks)"
    )
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
        data = os.path.abspath(args.data) if args.data else tmp
        overrides = [*base_overrides(args, data, tmp), *args.overrides]
        cfg = load_config(args.config, overrides)
        train = cfg.train
        if train.total_steps <= args.warmup or cfg.loss.weights.on("wpl"):
            parser.error("needs train.rounds x iterations_per_round > --warmup, and loss.weights.wpl=0 (the "
                         "baseline has no stage-1 prompts)")  # fmt: skip
        if not (Path(data) / "tables" / "paired").exists():
            from fairweather.stages.synth.driver import run_synth

            run_synth(cfg)
        backend = "nccl + bf16" if args.gpu else "gloo"
        print(f"{cfg.model.arch}, {train.total_steps} steps ({args.warmup} warm-up), {args.workers} {backend} "
              f"workers x {train.scaling.cpus_per_worker:g} CPU, batch {train.batch_size} + {train.real_batch_size} "
              f"real, crop {train.crop_size}, log_every {train.log_every}, loader threads {train.loader_threads}, "
              f"{args.num_cpus} Ray CPUs, {os.cpu_count()} cores", flush=True)  # fmt: skip
        everies = [int(v) for v in args.ray_log_every.split(",") if v] or [train.log_every]
        sides = {"plain": (run_plain, lambda r: cfg)}
        for every in everies:
            name = "ray" if len(everies) == 1 else f"ray, log_every {every}"
            # A run name per repeat: rerunning a finished name would resume it and train nothing.
            sides[name] = (
                run_ray,
                lambda r, every=every: load_config(
                    args.config,
                    [
                        *overrides,
                        f"train.log_every={every}",
                        f"train.run_name=bench-{every}-{r}-{os.getpid()}",
                    ],
                ),
            )
        if args.only:
            sides = {args.only: sides["plain" if args.only == "plain" else list(sides)[1]]}
            args.repeats = 1
        runs: dict[str, list[dict]] = {name: [] for name in sides}
        profile = Path(args.profile).resolve() if args.profile else None
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
        for repeat in range(args.repeats):
            # plain, ray, ray, plain, ...: a slow drift of the machine's load hits both sides alike.
            for name in list(sides)[:: 1 if repeat % 2 == 0 else -1]:
                run, side_cfg = sides[name]
                folder = Path(tmp, f"{name.replace(' ', '').replace(',', '-')}-{repeat}")
                runs[name].append(measure(name, run, side_cfg(repeat), folder, args.warmup, profile))
        if args.only:
            return
        images = args.workers * (train.batch_size + train.real_batch_size)
        print(f"\n{markdown_table(runs, images)}\n")
        plain = statistics.median(r["steps_per_s"] for r in runs["plain"])
        for name in list(runs)[1:]:
            ratio = statistics.median(r["steps_per_s"] for r in runs[name]) / plain
            print(f"{name} / plain, ratio of the median steady steps/s: {ratio:.3f}x (target >= 0.95x)")
        if args.gpu:
            backbone_images_per_s(args, tmp)


if __name__ == "__main__":
    main()
