"""The pieces of the training loop that do not need Ray: the batch stream of a rank, one iteration, the report window.

``stages/train/worker.py`` (Ray Train) and the plain ``torch.distributed`` baseline of ``benchmarks/bench_train.py``
both run their loop from these, so the two measure the same work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from fairweather.contracts.config import FairweatherConfig
from fairweather.data.batches import BatchPrefetcher, PairedBatches, RealBatches
from fairweather.data.sampling import ShardSampler

from .ema import ema_update, unwrap
from .optim import ema_decay_at
from .setup import TrainingParts, memory_format
from .step import StepResult, TrainBatch, reduce_step_terms, train_step


def batch_stream(
    cfg: FairweatherConfig, paired: Sequence[dict], real: Sequence[dict], rank: int, world: int, start: int
) -> BatchPrefetcher:
    """Rank ``rank``'s prefetched batches from step ``start`` on: ``train.batch_size`` pairs (each weather's
    ``train.weather_repeats`` times per epoch) and, when there are labeled real images, ``train.real_batch_size``
    of them, each rank on its own disjoint share per epoch."""
    train, seed, max_pixels = cfg.train, cfg.runtime.seed, cfg.data.max_image_pixels
    paired = [row for row in paired for _ in range(train.weather_repeats.of(row["weather"]))]
    sampler = ShardSampler(len(paired), rank, world, train.batch_size, seed)
    crops = {"crop": train.crop_size, "max_pixels": max_pixels, "weather_dropout": train.weather_dropout}
    builders = [PairedBatches(paired, sampler, clean_fraction=train.clean_pair_fraction, **crops)]
    if real and train.real_batch_size:
        sampler = ShardSampler(len(real), rank, world, train.real_batch_size, seed)
        builders.append(RealBatches(list(real), sampler, **crops))
    return BatchPrefetcher(builders, start, train.loader_threads, train.prefetch_batches)


@dataclass(frozen=True)
class Iteration:
    """What one iteration did: the step's result, how long it waited for data and computed, what it trained on."""

    result: StepResult
    wait: float
    busy: float
    images: int
    pair_ids: list[str]
    #: ``(image_id, pseudo_uri)`` of the real images of the step (empty without real images).
    real_ids: list[tuple[str, str | None]]


def iterate(
    cfg: FairweatherConfig,
    parts: TrainingParts,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader: BatchPrefetcher,
    step: int,
    device: torch.device,
) -> Iteration:
    """Step ``step`` (0-based): next batch, :func:`train_step` on ``model`` (the bare net or its DDP wrapper), EMA.

    On CUDA the forward runs under bf16 autocast (``train.bf16``); the images are in the network's layout
    (``train.channels_last``).
    """
    train, cuda = cfg.train, device.type == "cuda"
    batch, wait = next(loader)
    pair_ids, real_ids = batch.pop("paired_ids"), batch.pop("real_ids", [])
    started = time.perf_counter()
    result = train_step(
        model,
        parts.loss,
        optimizer,
        TrainBatch(**batch).to(device, memory_format(cfg)),
        step=step + 1,  # errors name the step as the logs and checkpoints count it (1 = the first)
        grad_clip=train.grad_clip or None,
        autocast_dtype=torch.bfloat16 if cuda and train.bf16 else None,
        scheduler=scheduler,
    )
    ema_update(parts.teacher, unwrap(model), ema_decay_at(step, train.ema_decay))
    images = batch["paired_input"].shape[0] + (batch["real_input"].shape[0] if "real_input" in batch else 0)
    return Iteration(result, wait, time.perf_counter() - started, images, pair_ids, real_ids)


class Window:
    """Iterations since the last report, turned into the reported metrics. The worker starts a new window after
    each report, so its clock (images/s) leaves out the report, the checkpoint and rank 0's validation."""

    def __init__(self) -> None:
        self.results: list[StepResult] = []
        self.wait = self.busy = 0.0
        self.images = 0
        self.start = time.perf_counter()

    def add(self, iteration: Iteration) -> None:
        self.results.append(iteration.result)
        self.wait += iteration.wait
        self.busy += iteration.busy
        self.images += iteration.images

    def metrics(self, names: list[str], world_size: int) -> dict[str, float]:
        """Loss terms (mean over the ranks and steps where each applied) and the total, reduced over ranks — a
        collective, every rank must call it — plus images/s (this rank's rate times the world size) and the
        fraction of this rank's step time spent waiting for data."""
        terms = reduce_step_terms(self.results, names)
        loss = torch.tensor([sum(r.loss for r in self.results), len(self.results)], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            on_gpu = dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
            reduced = loss.cuda() if on_gpu else loss
            dist.all_reduce(reduced)
            loss = reduced.cpu()
        elapsed = time.perf_counter() - self.start
        return {
            **{f"loss/{name}": value for name, value in terms.items()},
            "loss/total": float(loss[0] / loss[1]),
            "images_per_s": self.images * world_size / elapsed,
            "data_wait_fraction": self.wait / max(self.wait + self.busy, 1e-9),
        }
