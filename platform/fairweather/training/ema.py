"""The EMA (mean) teacher of Paper A: a second network built from the same config, updated in place.

Never a deep copy of the student: the teacher is built with ``build_model`` and loaded from the student's state,
so it shares the student's frozen CLIP (``teacher.clip is student.clip``) instead of carrying a second one, and it
never inherits DDP wrappers, hooks or gradient buffers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fairweather.contracts.config.model import ModelConfig
from fairweather.models import build_model


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (``.module``), or ``model`` itself."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def build_teacher(
    model_cfg: ModelConfig,
    student: nn.Module,
    clip: nn.Module | None = None,
    *,
    train_crop_size: int | None = None,
) -> nn.Module:
    """The EMA teacher of ``student`` (bare or DDP-wrapped): same architecture, same weights, eval mode, no
    gradients, on the student's device and dtype, in its memory format.

    ``clip``: the shared frozen CLIP of ``arch=clip_prior``; by default the student's own.
    """
    net = unwrap(student)
    clip = clip if clip is not None else getattr(net, "clip", None)
    # build_model initialises weights at random only to overwrite them: keep that off the training RNG stream, so
    # building a teacher (at start or on resume) never changes what the run draws next.
    with torch.random.fork_rng(devices=[]):
        teacher = build_model(model_cfg, clip, train_crop_size=train_crop_size)
    teacher.use_memory_format(net.memory_format).load_state_dict(net.state_dict())
    reference = next(net.parameters())
    return teacher.to(reference.device, reference.dtype).eval().requires_grad_(False)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """In place: ``teacher ← teacher + (1 − decay)·(student − teacher)`` for every parameter; buffers are copied.

    ``student`` may be DDP-wrapped; both must come from the same ``ModelConfig`` (checked by parameter name and shape).
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    net = unwrap(student)
    pairs = list(zip(teacher.named_parameters(), net.named_parameters(), strict=True))
    mismatched = [
        (f"{t} {tuple(tp.shape)}", f"{s} {tuple(sp.shape)}")
        for (t, tp), (s, sp) in pairs
        if (t, tp.shape) != (s, sp.shape)
    ]
    if mismatched:
        raise ValueError(f"teacher and student differ in parameter names or shapes, e.g. {mismatched[0]}")
    torch._foreach_lerp_([t for (_, t), _ in pairs], [s.detach() for _, (_, s) in pairs], 1.0 - decay)
    for teacher_buffer, student_buffer in zip(teacher.buffers(), net.buffers(), strict=True):
        teacher_buffer.copy_(student_buffer)
