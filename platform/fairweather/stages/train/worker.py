"""The Ray Train worker: one training loop for single runs, rounds and Tune trials, read top to bottom.

Everything that can run without Ray lives in the science layer (``fairweather.training``: the step, the EMA
teacher, checkpoint state, validation; ``fairweather.data``: sampling and batches). This shell only adds what
needs Ray Train: the rank, the dataset shards, DDP through ``prepare_model``, and ``report`` with checkpoints.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import ray.train
import ray.train.torch
import torch

from fairweather.contracts.config import FairweatherConfig, to_dict
from fairweather.contracts.io import atomic_write_bytes
from fairweather.imaging import image_grid
from fairweather.training.calibration_fit import calibrate_on_pairs
from fairweather.training.checkpoint_file import GRID_FILE
from fairweather.training.ema import unwrap
from fairweather.training.loop import Window, batch_stream, iterate
from fairweather.training.optim import build_optimizer, build_scheduler
from fairweather.training.setup import build_training_parts
from fairweather.training.state import (
    load_state,
    resume_training,
    save_state,
    start_from_weights,
    training_state,
)
from fairweather.training.validate import (
    balanced_subset,
    score_pairs,
    score_real,
    validation_scorers,
)

#: ``hook(rank, step, pair_ids, real_ids)``, called by every worker after each finished step with what it trained
#: on: the pair ids and the ``(image_id, pseudo_uri)`` of its real images (tests check the shards, the rounds'
#: pseudo-labels, and kill a worker mid-run). Picklable: it travels to the workers.
StepHook = Callable[[int, int, list[str], list[tuple[str, str | None]]], None]


@dataclass(frozen=True)
class WorkerJob:
    """What the driver hands every worker besides the datasets (``train_loop_config={"job": WorkerJob}``)."""

    cfg: FairweatherConfig
    #: Stage-1 weather prompt context ``(4, M, D)``, or None when ``loss.weights.wpl`` is 0.
    prompt_context: torch.Tensor | None
    table_versions: dict[str, str]
    #: Train until this many steps are done (a round's end); the LR schedule always spans every round.
    until_step: int
    step_hook: StepHook | None = None


def _rows(name: str) -> list[dict]:
    """Every row of dataset ``name`` (each worker gets the whole index and picks its own disjoint share)."""
    try:
        shard = ray.train.get_dataset_shard(name)
    except KeyError:  # the driver passes no dataset for an empty view (e.g. no labeled real images yet)
        return []
    return list(shard.iter_rows())


def _validate(
    cfg: FairweatherConfig, teacher: torch.nn.Module, val: list, real: list, device
) -> tuple[dict, bytes]:
    """EMA teacher on the synthetic val pairs (PSNR/SSIM) and a few real images (PIQE) + an image grid."""
    scorers = validation_scorers(device)
    teacher.eval()
    kw = {"max_pixels": cfg.data.max_image_pixels, "device": device}
    metrics, examples = score_pairs(
        teacher, balanced_subset(val, cfg.train.val_images), cfg.model, scorers, prefix="val", **kw
    )
    if cfg.train.val_real_images and real:
        real_metrics, real_examples = score_real(
            teacher,
            balanced_subset(real, cfg.train.val_real_images),
            cfg.model,
            scorers,
            prefix="val_real",
            **kw,
        )
        metrics.update(real_metrics)
        examples += real_examples
    return metrics, image_grid(examples)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point; ``config["job"]`` is a :class:`WorkerJob`."""
    job: WorkerJob = config["job"]
    cfg, train = job.cfg, job.cfg.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(train.scaling.cpus_per_worker)))

    parts = build_training_parts(cfg, device, job.prompt_context)
    optimizer = build_optimizer(parts.model, train)
    scheduler = build_scheduler(optimizer, train)
    step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = load_state(folder, arch=cfg.model.arch)
        # Weights, teacher, optimizer, scheduler and RNG; the current train.lr / weight_decay applied; a changed
        # network refused (the driver checked that already, said the changes and tagged them on the run).
        step, changes = resume_training(
            state, cfg, model=parts.model, teacher=parts.teacher, optimizer=optimizer, scheduler=scheduler
        )
        del state
        if rank == 0:
            for line in changes:
                print(f"train: resumed after step {step} with a changed setting, applied: {line}")
    elif train.init_weights:
        # A new run fine-tuning a trained network (every rank loads it: DDP's first broadcast would do the rest,
        # but the EMA teacher is not broadcast).
        state = load_state(train.init_weights, arch=cfg.model.arch)
        start_from_weights(state, cfg, model=parts.model, teacher=parts.teacher)
        del state
    # DDP around the network, already in train.channels_last's layout (build_training_parts).
    model = ray.train.torch.prepare_model(parts.model)

    paired, real, val = _rows("paired"), _rows("real"), _rows("val")
    loader = batch_stream(cfg, paired, real, rank, world, step)
    window = Window()
    try:
        while step < job.until_step:
            iteration = iterate(cfg, parts, model, optimizer, scheduler, loader, step, device)
            step += 1
            window.add(iteration)
            if job.step_hook is not None:
                job.step_hook(rank, step, iteration.pair_ids, iteration.real_ids)
            save = step % train.checkpoint_every == 0 or step == job.until_step
            if step % train.log_every and not save:
                continue
            metrics = {
                **window.metrics(parts.loss.names, world),
                "lr": scheduler.get_last_lr()[0],
                "step": step,
                # 1-based, as the rounds driver, its MLflow children and the pseudo_labels table count them
                "round": (step - 1) // train.iterations_per_round + 1,
            }
            if not save:
                ray.train.report(metrics)
                window = Window()  # after the report: its wait for the controller is not training time
                continue
            with tempfile.TemporaryDirectory() as folder:
                if rank == 0:
                    # The job's last checkpoint carries the teacher's colour calibration (a few seconds): the one
                    # that evaluate, restore and the next round's pseudo-labels read.
                    calibration = None
                    if step == job.until_step and train.calibration.enabled and paired:
                        parts.teacher.eval()
                        calibration = calibrate_on_pairs(
                            parts.teacher,
                            paired,
                            cfg.model,
                            train.calibration,
                            max_pixels=cfg.data.max_image_pixels,
                            device=device,
                        ).to_state()
                    state = training_state(
                        arch=cfg.model.arch,
                        model=unwrap(model),
                        teacher=parts.teacher,
                        optimizer=optimizer,
                        scheduler=scheduler,
                        prompt_context=job.prompt_context,
                        step=step,
                        round_index=metrics["round"],
                        config=to_dict(cfg),
                        table_versions=job.table_versions,
                        calibration=calibration,
                    )
                    save_state(state, folder)
                    val_metrics, grid = _validate(cfg, parts.teacher, val, real, device)
                    atomic_write_bytes(f"{folder}/{GRID_FILE}", grid)
                    metrics.update(val_metrics)
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
                else:
                    ray.train.report(metrics)
            window = Window()  # ... nor are rank 0's checkpoint and validation (every rank waits for them)
    finally:
        loader.close()
