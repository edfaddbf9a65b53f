"""Tan et al.'s CLIP-prior network (SAR encoder + CWP prior) and the CLIP-SRD loss, on the tiny CLIP, CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fairweather.contracts.config.model import CLIPPriorConfig, ModelConfig
from fairweather.encoders.clip import FrozenCLIP
from fairweather.losses.composite import CompositeLoss, LossContext, LossTerm
from fairweather.losses.srd import CLIPSoftResidualDistillation, clip_residual_target
from fairweather.models import build_model
from fairweather.models.clip_prior import CLIPPriorNet

from .checks import l1_before_and_after_one_adam_step

TINY = CLIPPriorConfig(width=8, levels=2, blocks_per_level=1, prior_tokens=4, prior_dim=16, attention_heads=2)


def _pair(size: int = 32, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth clean image and a hazy, streaky 'weather' version of it (seeded)."""
    gen = torch.Generator().manual_seed(1)
    clean = F.interpolate(torch.rand(n, 3, 8, 8, generator=gen), size=(size, size), mode="bilinear")
    streaks = (torch.rand(n, 1, 1, size, generator=gen) > 0.75).float().expand(n, 1, size, size)
    return (0.6 * clean + 0.3 + 0.3 * streaks).clamp(0, 1), clean


def _net(clip: FrozenCLIP, cfg: CLIPPriorConfig = TINY) -> CLIPPriorNet:
    torch.manual_seed(0)
    return CLIPPriorNet(cfg, clip=clip)


def _clip_state(clip: FrozenCLIP) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in clip.state_dict().items()}


def test_shapes_for_odd_sizes_and_gate_range(clip: FrozenCLIP) -> None:
    net = _net(clip)
    x = torch.rand(2, 3, 37, 45)
    restored, aux = net(x, return_aux=True)
    assert restored.shape == x.shape
    gh, gw = net.grid_hw
    assert aux["sar_residual"].shape == (2, clip.token_dim, gh, gw)
    gate = aux["sar_gate"]
    assert gate.shape == (2, 1, 10, 12)  # ceil(37 / 4), ceil(45 / 4)
    assert gate.min() >= 0 and gate.max() <= 1
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_config_variants_run(clip: FrozenCLIP) -> None:
    x = torch.rand(1, 3, 19, 23)
    for cfg in (
        CLIPPriorConfig(width=8, levels=1, prior_tokens=0, prior_dim=8, prior_min_level=0),
        CLIPPriorConfig(width=8, levels=2, use_patch_tokens=False, use_global_embedding=False, prior_dim=8),
    ):
        assert _net(clip, cfg)(x).shape == x.shape


def test_clip_is_not_part_of_the_network(clip: FrozenCLIP) -> None:
    net = _net(clip)
    clip_params = {id(p) for p in clip.parameters()}
    assert clip_params and not clip_params & {id(p) for p in net.parameters()}
    clip_storage = {p.data_ptr() for p in clip.state_dict().values()}
    assert not clip_storage & {v.data_ptr() for v in net.state_dict().values()}
    assert not any("clip" in key for key in net.state_dict())
    before = _clip_state(clip)
    degraded, clean = _pair()
    srd = CLIPSoftResidualDistillation(clip)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    restored, aux = net(degraded, return_aux=True)
    loss = F.l1_loss(restored, clean) + srd(
        LossContext(domain="paired", restored=restored, degraded=degraded, target=clean, aux=aux)
    )
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in clip.parameters())
    after = clip.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_gradients_reach_sar_gates_and_prior_tokens(clip: FrozenCLIP) -> None:
    net = _net(clip)
    degraded, clean = _pair()
    F.l1_loss(net(degraded), clean).backward()
    for gate in (net.encoder[0][0].gate, net.bottleneck[-1].gate):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gate.parameters())
    assert net.prior_tokens.grad is not None and net.prior_tokens.grad.abs().sum() > 0
    assert net.patch_proj.weight.grad.abs().sum() > 0 and net.global_proj.weight.grad.abs().sum() > 0


def test_one_step_reduces_loss(clip: FrozenCLIP) -> None:
    before, after = l1_before_and_after_one_adam_step(_net(clip), *_pair())
    assert after < before


def test_overfits_a_32x32_pair(clip: FrozenCLIP) -> None:
    net = _net(clip)
    degraded, clean = _pair()
    srd = CLIPSoftResidualDistillation(clip)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    pixel, distill = [], []
    for _ in range(80):
        opt.zero_grad()
        restored, aux = net(degraded, return_aux=True)
        l1 = F.l1_loss(restored, clean)
        srd_value = srd(
            LossContext(domain="paired", restored=restored, degraded=degraded, target=clean, aux=aux)
        )
        (l1 + 0.1 * srd_value).backward()
        opt.step()
        pixel.append(l1.item())
        distill.append(srd_value.item())
    assert pixel[-1] < 0.2 * pixel[0], pixel
    assert distill[-1] < 0.5 * distill[0], distill


def test_srd_is_zero_at_its_target_and_positive_elsewhere(clip: FrozenCLIP) -> None:
    degraded, clean = _pair(n=2)
    srd = CLIPSoftResidualDistillation(clip)
    residual = clip_residual_target(clip, degraded, clean)  # (N, L, C)
    gh, gw = (clip.grid_size, clip.grid_size) if isinstance(clip.grid_size, int) else clip.grid_size
    assert residual.shape == (2, gh * gw, clip.token_dim) and residual.abs().sum() > 0
    exact = residual.transpose(1, 2).reshape(2, clip.token_dim, gh, gw)
    assert srd.distance(exact, residual).item() == pytest.approx(0.0, abs=1e-7)
    assert srd.distance(exact + 0.05 * torch.randn_like(exact), residual) > 0
    assert srd.distance(torch.zeros_like(exact), residual) > 0
    assert clip_residual_target(clip, clean, clean).abs().max() == 0  # no weather, no residual
    with pytest.raises(ValueError, match="does not match"):
        srd.distance(exact[:, :, :1], residual)


def test_srd_gradient_reaches_sar_encoder_not_clip(clip: FrozenCLIP) -> None:
    net = _net(clip)
    degraded, clean = _pair()
    restored, aux = net(degraded, return_aux=True)
    loss = CLIPSoftResidualDistillation(clip)(
        LossContext(domain="paired", restored=restored, degraded=degraded, target=clean, aux=aux)
    )
    assert loss > 0
    loss.backward()
    for module in (net.encoder[0][0], net.bottleneck[-1].gate, net.srd_head):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(p.grad is None for p in clip.parameters())
    assert all(p.grad is None for p in net.head.parameters())  # the decoder is not what SRD trains


def test_srd_term_in_composite_loss_acts_on_pairs_only(clip: FrozenCLIP) -> None:
    srd = CLIPSoftResidualDistillation(clip)
    assert isinstance(srd, LossTerm) and srd.name == "srd" and srd.needs_aux
    composite = CompositeLoss([(srd, 0.5)])
    assert composite.needs_aux
    assert not any(id(p) in {id(q) for q in clip.parameters()} for p in composite.parameters())
    net = _net(clip)
    degraded, clean = _pair()
    restored, aux = net(degraded, return_aux=True)
    # Even a real batch that (wrongly) carried a target is not a domain SRD acts on.
    total, values, applied = composite(
        LossContext(domain="real", restored=restored, degraded=degraded, target=clean, aux=aux)
    )
    assert not applied.any() and values.tolist() == [0.0] and total.item() == 0
    total, values, applied = composite(
        LossContext(domain="paired", restored=restored, degraded=degraded, target=clean, aux=aux)
    )
    assert applied.tolist() == [True] and total.item() == pytest.approx(0.5 * values[0].item())


def test_side_outputs_only_when_asked(clip: FrozenCLIP) -> None:
    """Without return_aux the SRD head does not run, so it gets no gradient; freeze_aux_heads stops training it."""
    net = _net(clip)
    calls = []
    net.srd_head.register_forward_hook(lambda *_: calls.append(1))
    degraded, clean = _pair()
    F.l1_loss(net(degraded), clean).backward()
    assert calls == [] and all(p.grad is None for p in net.srd_head.parameters())
    assert all(p.grad is not None for name, p in net.named_parameters() if not name.startswith("srd_head"))
    restored, aux = net(degraded, return_aux=True)
    assert calls == [1]
    torch.testing.assert_close(restored, net(degraded))  # the same restoration either way
    assert set(aux) == {"sar_residual", "sar_gate"}
    net.freeze_aux_heads()
    assert net.aux_heads == ("srd_head",)
    assert not any(p.requires_grad for p in net.srd_head.parameters())
    assert all(p.requires_grad for name, p in net.named_parameters() if not name.startswith("srd_head"))
    assert any(key.startswith("srd_head") for key in net.state_dict())  # one checkpoint layout for every run


def test_srd_needs_target_and_aux(clip: FrozenCLIP) -> None:
    srd = CLIPSoftResidualDistillation(clip)
    degraded, clean = _pair()
    with pytest.raises(ValueError, match="target"):
        srd(LossContext(domain="real", restored=degraded, degraded=degraded, target=None, aux={}))
    with pytest.raises(KeyError, match="sar_residual"):
        srd(LossContext(domain="paired", restored=degraded, degraded=degraded, target=clean, aux={}))
    assert not list(srd.parameters())


def test_build_model_and_bad_inputs(clip: FrozenCLIP) -> None:
    net = build_model(ModelConfig(arch="clip_prior", clip_prior=TINY), clip=clip)
    assert isinstance(net, CLIPPriorNet)
    with pytest.raises(ValueError, match="clip"):
        CLIPPriorNet(TINY, clip=None)
    with pytest.raises(TypeError, match="encode_image"):
        CLIPPriorNet(TINY, clip=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="attention_heads"):
        CLIPPriorConfig(width=8, attention_heads=3)
