"""Checkpoints as plain dicts of state: save atomically, load with ``weights_only=True``, refuse a mismatch.

A checkpoint holds everything a resumed run needs to continue as if it never stopped: the student and its EMA
teacher, optimizer and scheduler, the stage-1 weather prompts, the step and round, the RNG state, the *masked*
config (:func:`fairweather.contracts.redact.redact`: a resume reads secrets from the user's config or environment
again, never from a checkpoint) and the versions of the tables it trained on. Only tensors, numbers, strings,
lists and dicts are stored, so loading never unpickles code.

Every failure is one :class:`CheckpointError` line: a full disk while saving (the previous checkpoint is kept:
files are written to a staging name, fsync'ed and renamed), an empty, truncated or unsafe file while loading, a
checkpoint of another network, or a resume whose config changed what a checkpoint cannot follow
(:func:`resume_training`).
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.config.loader import flatten, to_dict
from fairweather.contracts.config.train import TrainConfig
from fairweather.contracts.io import DiskFullError, atomic_write_bytes
from fairweather.contracts.redact import redact

from .checkpoint_file import (
    EXPECTED,
    FORMAT_VERSION,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    check_state,
    corrupted,
    read_file,
    refused,
    state_path,
)


def capture_rng() -> dict[str, torch.Tensor]:
    """Torch's CPU (and CUDA, where present) generator states. The data pipeline seeds itself per (run, epoch,
    image), so these only matter for stochastic layers (dropout, drop-path)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def training_state(
    *,
    arch: str,
    model: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    prompt_context: torch.Tensor | None,
    step: int,
    round_index: int,
    config: dict[str, Any],
    table_versions: dict[str, str],
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict. ``model`` is the bare network (not its DDP wrapper); ``step`` counts finished steps;
    ``config`` (``to_dict(cfg)``) is stored masked; ``calibration`` is the teacher's colour calibration
    (:meth:`fairweather.training.calibration.Calibration.to_state`), in a job's last checkpoint only."""
    return {
        "format": FORMAT_VERSION,
        "arch": arch,
        "model": model.state_dict(),
        "teacher": teacher.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "prompt_context": prompt_context,
        "step": step,
        "round": round_index,
        "rng": capture_rng(),
        "config": redact(config),
        "table_versions": table_versions,
        "calibration": calibration,
    }


def save_torch(obj: Any, path: str) -> str:
    """``torch.save`` of ``obj`` to ``path`` through the one atomic writer, durably (staging name, fsync, rename,
    fsync of the folder).

    Raises CheckpointError ``disk full while writing <path>: the previous checkpoint is kept`` on a full disk.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue(), durable=True)
    except DiskFullError as err:
        raise CheckpointError(f"disk full while writing {path}: the previous checkpoint is kept") from err
    return path


def save_state(state: dict[str, Any], folder: str | Path) -> str:
    """Write ``state`` to ``<folder>/state.pt`` atomically, its config masked; returns the file's path."""
    if "config" in state:
        state = {**state, "config": redact(state["config"])}
    return save_torch(state, f"{folder}/{STATE_FILE}")


#: What a run's ``model/model.pt`` artifact keeps of a checkpoint (no optimizer, scheduler or RNG state).
MODEL_KEYS = ("format", "arch", "model", "teacher", "prompt_context", "step", "config", "calibration")


def save_model_artifact(state: dict[str, Any], folder: str | Path) -> str:
    """Write the :data:`MODEL_KEYS` of checkpoint ``state`` to ``<folder>/model.pt`` atomically, config masked."""
    model = {key: state[key] for key in MODEL_KEYS if key in state}
    if "config" in model:
        model["config"] = redact(model["config"])
    return save_torch(model, f"{folder}/{MODEL_FILE}")


#: The class torch's weights-only unpickler refused, in its message.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_torch(path: str, what: str = "checkpoint", expected: str = "") -> Any:
    """``torch.load(weights_only=True)`` of the file at ``path``, every failure one :class:`CheckpointError` line.

    A missing or unreadable file (``expected`` says what should have been there), an empty one, a truncated or
    corrupted one, and a pickle that holds code (refused unread; torch's advice to turn the check off is not passed
    on) each get their own words.
    """
    data = read_file(path, what, expected)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weightsunpickler" in str(err).lower():
            found = _REFUSED_GLOBAL.search(str(err))
            held = f"a {found[1]} object" if found else "objects other than tensors and plain data"
            raise CheckpointError(refused(what, path, held)) from None
        raise CheckpointError(corrupted(what, path, data)) from None
    except Exception:  # EOFError, RuntimeError of the zip reader, ...: whatever torch makes of broken bytes
        raise CheckpointError(corrupted(what, path, data)) from None


def load_state(path: str | Path, *, arch: str | None = None) -> dict[str, Any]:
    """Read a checkpoint (``weights_only=True``): a folder holding ``state.pt`` or ``model.pt``, or such a file;
    with ``arch``, refuse a checkpoint of another network."""
    path = state_path(str(path))
    return check_state(load_torch(path, expected=EXPECTED), path, arch)


#: Config keys a resumed run cannot change: they shape the network (and the stored weather prompts).
_FIXED_ON_RESUME = ("model.", "loss.prompt_context_len")
#: Config sections whose changes a resume reports (everything else there is read from the config at every step).
_REPORTED_ON_RESUME = ("train.", "loss.", "encoders.")
#: Keys that name a run rather than configure it, and ``train.init_weights``, read at step 0 only.
_NAMES = ("train.run_name", "train.new_run", "train.init_weights")


def config_changes(stored: Mapping[str, Any], cfg: FairweatherConfig) -> tuple[list[str], list[str]]:
    """``(changes, refusals)``: ``key: old -> new`` lines of the training settings that differ between a
    checkpoint's stored (masked) config and ``cfg``, split into the ones a resume applies
    and the ones it cannot (:data:`_FIXED_ON_RESUME`). Both sides are compared masked; keys missing on either side
    (a field added since) are skipped."""
    old, new = flatten(redact(dict(stored))), flatten(redact(to_dict(cfg)))
    changes, refusals = [], []
    for key in sorted(old.keys() & new.keys()):
        if old[key] == new[key] or key in _NAMES:
            continue
        line = f"{key}: {old[key]} -> {new[key]}"
        if key.startswith(_FIXED_ON_RESUME):
            refusals.append(line)
        elif key.startswith(_REPORTED_ON_RESUME):
            changes.append(line)
    return changes, refusals


def apply_optimizer_settings(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, train: TrainConfig
) -> None:
    """Put ``train.lr`` and ``train.weight_decay`` into a restored optimizer and scheduler.

    ``optimizer.load_state_dict`` and ``scheduler.load_state_dict`` bring back the checkpoint's peak learning rate
    and weight decay; this sets the current ones (the groups of :func:`~fairweather.training.optim.build_optimizer`:
    decay on tensors of two or more dimensions only), and the learning rate of the current step on the schedule,
    so the run continues from the new peak at the same point of its warm-up and cosine decay.
    """
    for group in optimizer.param_groups:
        group["initial_lr"] = train.lr
        group["weight_decay"] = train.weight_decay if any(p.ndim >= 2 for p in group["params"]) else 0.0
    scheduler.base_lrs = [train.lr] * len(optimizer.param_groups)
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas, strict=True):
        group["lr"] = train.lr * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def check_init_weights(stored: Mapping[str, Any], cfg: FairweatherConfig) -> None:
    """Refuse, in one CheckpointError line, a ``train.init_weights`` checkpoint whose stored config built another
    network than ``cfg`` does (``model.*``, ``loss.prompt_context_len``)."""
    _, refusals = config_changes(stored, cfg)
    if refusals:
        raise CheckpointError(
            f"cannot start from train.init_weights={cfg.train.init_weights}: its network was built otherwise "
            f"({'; '.join(refusals)}); give a checkpoint of this network or change those values"
        )


def start_from_weights(
    state: dict[str, Any], cfg: FairweatherConfig, *, model: nn.Module, teacher: nn.Module
) -> None:
    """Start a new run from checkpoint ``state``'s network and EMA teacher (``train.init_weights``); the optimizer,
    schedule, step and RNG stay fresh (:func:`check_init_weights` first)."""
    check_init_weights(state.get("config") or {}, cfg)
    model.load_state_dict(state["model"])
    teacher.load_state_dict(state["teacher"])


def resume_training(
    state: dict[str, Any],
    cfg: FairweatherConfig,
    *,
    model: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
) -> tuple[int, list[str]]:
    """Continue from checkpoint ``state`` under config ``cfg``: ``(step, changes)``.

    Changed network settings (``model.*``, ``loss.prompt_context_len``) are refused with one CheckpointError
    line naming each; otherwise the weights, teacher, optimizer, scheduler and RNG are restored and the current
    ``train.lr`` and ``train.weight_decay`` applied (:func:`apply_optimizer_settings`): every other training
    setting is read from ``cfg`` at each step anyway. ``changes`` are the ``key: old -> new`` lines of what differs
    from the checkpoint's config, for the caller to print and log.
    """
    changes, refusals = config_changes(state.get("config") or {}, cfg)
    if refusals:
        raise CheckpointError(
            f"cannot resume at step {state['step']}: the config changed what the checkpoint's network was built "
            f"with ({'; '.join(refusals)}); start a new run (train.new_run=true or another train.run_name) or "
            "restore those values"
        )
    model.load_state_dict(state["model"])
    teacher.load_state_dict(state["teacher"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    apply_optimizer_settings(optimizer, scheduler, cfg.train)
    restore_rng(state["rng"])
    return int(state["step"]), changes
