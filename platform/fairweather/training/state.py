"""Checkpoints as plain dicts of state: save atomically, load with ``weights_only=True``, refuse a mismatch.

A checkpoint holds everything a resumed run needs to continue as if it never stopped: the student and its EMA
teacher, optimizer and scheduler, the stage-1 weather prompts, the step and round, the RNG state, the config and
the versions of the tables it trained on. Only tensors, numbers, strings, lists and dicts are stored, so loading
never unpickles code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
from torch import nn

from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import atomic_write_bytes, filesystem_for, read_bytes

#: File name of the state inside a checkpoint folder.
STATE_FILE = "state.pt"
#: File name of a training run's model artifact (``model/model.pt``: the state without optimizer and RNG).
MODEL_FILE = "model.pt"
#: Bumped when the layout of the state dict changes.
FORMAT_VERSION = 1


class CheckpointError(FairweatherError):
    """A checkpoint cannot be used here: another architecture or format, or an unreadable file."""


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
) -> dict[str, Any]:
    """The checkpoint dict. ``model`` is the bare network (not its DDP wrapper); ``step`` counts finished steps."""
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
        "config": config,
        "table_versions": table_versions,
    }


def save_state(state: dict[str, Any], folder: str | Path) -> str:
    """Write ``state`` to ``<folder>/state.pt`` atomically; returns the file's path."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = f"{folder}/{STATE_FILE}"
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _state_path(path: str) -> str:
    """The state file of a checkpoint: ``<folder>/state.pt`` of a training checkpoint, ``<folder>/model.pt`` of a
    run's ``model`` artifact folder, or ``path`` itself when it names a file."""
    fs, local = filesystem_for(path)
    if fs.get_file_info(local).type != pafs.FileType.Directory:
        return path
    for name in (STATE_FILE, MODEL_FILE):
        if fs.get_file_info(f"{local}/{name}").type == pafs.FileType.File:
            return f"{path.rstrip('/')}/{name}"
    return f"{path.rstrip('/')}/{STATE_FILE}"  # missing: the error below names what was expected


def load_state(path: str | Path, *, arch: str | None = None) -> dict[str, Any]:
    """Read a checkpoint (``weights_only=True``): a folder holding ``state.pt`` or ``model.pt``, or such a file;
    with ``arch``, refuse a checkpoint of another network."""
    path = _state_path(str(path))
    try:
        state = torch.load(io.BytesIO(read_bytes(path)), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as err:  # missing, truncated, not weights-only
        raise CheckpointError(
            f"cannot read checkpoint {path} (a folder holding {STATE_FILE} or {MODEL_FILE}, or such a file): {err}"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path} has format {found}, this code reads {FORMAT_VERSION}")
    if arch is not None and state["arch"] != arch:
        raise CheckpointError(
            f"checkpoint {path} holds a '{state['arch']}' network, but model.arch is '{arch}'; "
            "train a new run (train.new_run=true) or set model.arch to match"
        )
    return state
