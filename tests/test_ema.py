"""The EMA teacher and shared frozen encoders: hand-computed lerp, the teacher shares the student's CLIP, copies of a
CLIP-prior network never copy the CLIP, and who moves a shared encoder to a device (its creator, not its users)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from fairweather.contracts.config.encoders import CLIPEncoderConfig
from fairweather.contracts.config.model import CLIPPriorConfig, ModelConfig
from fairweather.encoders import FrozenCLIP, share_encoder
from fairweather.models import build_model
from fairweather.training.ema import build_teacher, ema_update, unwrap

CLIP_PRIOR = ModelConfig(
    arch="clip_prior",
    clip_prior=CLIPPriorConfig(width=8, levels=2, prior_tokens=4, prior_dim=16, attention_heads=2),
)


def perturbed(net: nn.Module, seed: int) -> nn.Module:
    """``net`` with every parameter moved by seeded noise, so student and teacher differ everywhere."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
    return net


def test_ema_update_matches_a_hand_computed_lerp() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(arch="nafnet")
    student = build_model(cfg)
    teacher = build_teacher(cfg, student)
    perturbed(student, seed=1)
    before = {name: p.detach().clone() for name, p in teacher.named_parameters()}
    decay = 0.9
    ema_update(teacher, student, decay)
    for name, p in student.named_parameters():
        expected = before[name] + (1 - decay) * (p.detach() - before[name])  # t + (1 - d)(s - t)
        torch.testing.assert_close(dict(teacher.named_parameters())[name], expected)
    ema_update(teacher, student, 0.0)  # decay 0: the teacher becomes the student
    for (_, t), (_, s) in zip(teacher.named_parameters(), student.named_parameters(), strict=True):
        torch.testing.assert_close(t, s)


def test_ema_update_copies_buffers_and_refuses_another_architecture() -> None:
    def net() -> nn.Module:
        return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))

    student, teacher = net(), net()
    student.train()(torch.randn(8, 3))  # moves the batch-norm running statistics
    ema_update(teacher, student, 0.99)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        assert torch.equal(t, s)
    with pytest.raises(ValueError, match="decay"):
        ema_update(teacher, student, 1.5)
    with pytest.raises(ValueError, match="parameter names or shapes"):
        ema_update(
            nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)),
            nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4)),
            0.5,
        )


def test_teacher_is_built_not_copied_and_shares_the_clip(clip: FrozenCLIP) -> None:
    torch.manual_seed(0)
    student = perturbed(build_model(CLIP_PRIOR, clip), seed=2)
    rng_before = torch.get_rng_state()
    teacher = build_teacher(CLIP_PRIOR, student)
    assert torch.equal(
        torch.get_rng_state(), rng_before
    )  # building a teacher draws nothing from the run's RNG
    assert teacher.clip is student.clip is clip
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert teacher.state_dict().keys() == student.state_dict().keys()
    for key, value in student.state_dict().items():
        assert torch.equal(teacher.state_dict()[key], value)
        assert teacher.state_dict()[key].data_ptr() != value.data_ptr()  # its own weights, not the student's
    assert build_teacher(CLIP_PRIOR, student, clip=clip).clip is clip
    assert unwrap(student) is student


def test_copies_of_a_clip_prior_network_share_the_clip(clip: FrozenCLIP) -> None:
    net = build_model(CLIP_PRIOR, clip)
    clip_params = {p.data_ptr() for p in clip.parameters()}
    for copied in (copy.deepcopy(net), AveragedModel(net).module):
        assert copied.clip is clip
        assert {p.data_ptr() for p in copied.parameters()}.isdisjoint(
            {p.data_ptr() for p in net.parameters()}
        )
        assert not clip_params & {p.data_ptr() for p in copied.parameters()}
    assert copy.deepcopy(clip) is clip  # a frozen encoder is never copied
    assert not any("clip" in key for key in AveragedModel(net).state_dict())


def test_the_creator_of_a_shared_encoder_places_it(model_cache: Path) -> None:
    """``net.to(...)`` moves only the network's own weights; one ``clip.to(...)`` by its creator moves the CLIP for
    every module sharing it. Shown with dtypes (this runs on CPU); devices follow the same rule."""
    clip = FrozenCLIP.from_config(
        CLIPEncoderConfig(model_name="tiny:clip"), model_cache
    )  # not the shared fixture
    net = build_model(CLIP_PRIOR, clip)
    teacher = build_teacher(CLIP_PRIOR, net)
    net.to(torch.float64)
    assert next(net.parameters()).dtype == torch.float64
    assert next(clip.parameters()).dtype == torch.float32  # not moved with the network
    clip.to(torch.float64)
    assert net.clip is teacher.clip is clip and next(teacher.clip.parameters()).dtype == torch.float64
    out = net(torch.rand(1, 3, 16, 16, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_only_frozen_encoders_can_be_shared() -> None:
    with pytest.raises(TypeError, match="FrozenModule"):
        share_encoder(nn.Linear(2, 2), "clip", nn.Linear(2, 2))
