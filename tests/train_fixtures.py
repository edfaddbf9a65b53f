"""A tiny training setup for the training tests: generated 32-px pairs in a private table store, NAFNet, L_sup."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fairweather.contracts.config import FairweatherConfig, load_config


def tiny_overrides(root: Path, model_cache: Path, **extra: object) -> list[str]:
    """Overrides of the smoke profile that train for a few seconds on generated data under ``root``."""
    values: dict[str, object] = {
        "runtime.runs_dir": root / "runs",
        "runtime.model_cache_dir": model_cache,
        "runtime.storage_path": root / "train",
        "runtime.num_cpus": 2,
        "data.tables": root / "tables",
        "data.pool": root / "data" / "pool",
        "synth.out": root / "data",
        "synth.clean": "null",  # procedural scenes: fast; the real-photo path has tests of its own
        "synth.num_paired": 30,
        "synth.val_fraction": 0.2,
        "synth.test_fraction": 0.2,
        "synth.num_unlabeled": 0,
        "synth.size": "[32,32]",
        "loss.weights.ps": 0,
        "loss.weights.wpl": 0,
        "loss.weights.sem": 0,
        "loss.weights.feat": 0,
        "train.rounds": 1,
        "pseudo.init": True,
        "pseudo.warmup_steps": 0,  # tests that exercise the warm-up turn it on
        "evaluate.metrics": "[piqe]",
        "pseudo.metrics": "[piqe]",  # NIQE's parameters come through `fairweather prefetch` (network): not in tests
        "train.iterations_per_round": 6,
        "train.batch_size": 2,
        "train.real_batch_size": 0,
        "train.crop_size": 32,
        "train.warmup_steps": 2,
        "train.log_every": 1,
        "train.checkpoint_every": 3,
        "train.val_images": 2,
        "train.val_real_images": 0,
        "train.loader_threads": 1,
        "train.prefetch_batches": 2,
        "train.max_failures": 1,
        "train.scaling.num_workers": 1,
        "train.scaling.cpus_per_worker": 1,
        **extra,
    }
    return [f"{key}={value}" for key, value in values.items()]


def tiny_config(root: Path, model_cache: Path, **extra: object) -> FairweatherConfig:
    return load_config("smoke", tiny_overrides(root, model_cache, **extra))


def record_steps(
    path: str, rank: int, step: int, pair_ids: list[str], real_ids: list[tuple[str, str | None]]
) -> None:
    """Step hook: append ``{"rank", "step", "ids", "real"}`` to the JSON-lines file ``path`` (``real``: the
    ``[image_id, pseudo_uri]`` of the step's real images)."""
    with open(path, "a") as out:
        out.write(json.dumps({"rank": rank, "step": step, "ids": pair_ids, "real": real_ids}) + "\n")


def record_then_die_once(
    path: str,
    marker: str,
    die_at: int,
    rank: int,
    step: int,
    pair_ids: list[str],
    real_ids: list[tuple[str, str | None]],
) -> None:
    """Step hook: record the step, and the first time rank 0 finishes step ``die_at`` kill its process."""
    record_steps(path, rank, step, pair_ids, real_ids)
    if rank == 0 and step == die_at and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)  # a hard crash: no exception, no cleanup, like an OOM kill


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def record_then_raise(
    path: str,
    at: int,
    rank: int,
    step: int,
    pair_ids: list[str],
    real_ids: list[tuple[str, str | None]],
) -> None:
    """Step hook: record the step; rank 0 raises NonFiniteError after step ``at`` (weights gone NaN, as
    ``train_step`` reports it), every time it gets there."""
    record_steps(path, rank, step, pair_ids, real_ids)
    if rank == 0 and step == at:
        from fairweather.training.step import NonFiniteError

        raise NonFiniteError(
            f"the weights became non-finite after the optimizer step at step {step} (their norm is nan, "
            "learning rate 0.003): lower train.lr"
        )


def record_then_fill_the_disk(
    path: str,
    at: int,
    where: str,
    rank: int,
    step: int,
    pair_ids: list[str],
    real_ids: list[tuple[str, str | None]],
) -> None:
    """Step hook: record the step; after step ``at`` rank 0's disk is full (in this worker process) for
    ``where`` = ``writer`` (our checkpoint writer's fsync) or ``copy`` (Ray's copy of the checkpoint into the run
    folder, which leaves a half-written file there)."""
    import errno

    record_steps(path, rank, step, pair_ids, real_ids)
    if rank != 0 or step != at:
        return

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "writer":
        os.fsync = full  # type: ignore[assignment]
        return
    import pyarrow.fs

    def half_copy(source, destination, source_filesystem=None, destination_filesystem=None, **kwargs):
        with destination_filesystem.open_output_stream(f"{destination}/state.pt") as out:
            out.write(b"PK\x03\x04 half")
        raise OSError(
            errno.ENOSPC, "[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device"
        )

    pyarrow.fs.copy_files = half_copy
