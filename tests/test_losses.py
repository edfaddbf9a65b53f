"""Paper A's loss terms and the weighted composite: hand-made values, skipping rules, gradients, text cache."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fairweather.contracts.config.loss import LossConfig, LossWeights
from fairweather.encoders import FrozenCLIP, FrozenDepthEncoder
from fairweather.losses import (
    CompositeLoss,
    DepthFeatureLoss,
    LossContext,
    LossTerm,
    PixelLoss,
    PseudoLabelLoss,
    SemanticLoss,
    SupervisedLoss,
    TextEmbeddingCache,
    WeatherPrompts,
    build_composite_loss,
)


def weights(**nonzero: float) -> LossConfig:
    """A LossConfig with every weight 0 except the given ones."""
    zero = {f.name: 0.0 for f in dataclasses.fields(LossWeights)}
    return LossConfig(weights=LossWeights(**{**zero, **nonzero}))


class Recorder(nn.Module):
    """Stands in for an encoder and records every call; a skipped term must never reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.logit_scale = 1.0

    def __getattr__(self, name: str):
        if name in ("calls", "logit_scale") or name.startswith("_"):
            return super().__getattr__(name)

        def record(*args, **kwargs):
            self.calls.append(name)
            raise AssertionError(f"encoder method {name} called")

        return record

    def forward(self, *args, **kwargs):
        self.calls.append("forward")
        raise AssertionError("encoder called")


# ---- pixel terms -----------------------------------------------------------------------------------------------


def test_pixel_losses_on_hand_made_values() -> None:
    prediction = torch.zeros(1, 3, 2, 2)
    target = torch.zeros(1, 3, 2, 2)
    target[0, 0, 0, 0] = 1.2  # one pixel off by 1.2, eleven exact
    assert float(PixelLoss("l1")(prediction, target)) == pytest.approx(1.2 / 12)
    eps = 0.1
    expected = (math.sqrt(1.2**2 + eps**2) + 11 * eps) / 12
    assert float(PixelLoss("charbonnier", eps)(prediction, target)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="charbonier"):
        PixelLoss("charbonier")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prediction"):
        PixelLoss()(prediction, torch.zeros(1, 3, 2, 3))


def test_pseudo_label_loss_counts_only_images_that_have_one() -> None:
    restored = torch.zeros(3, 3, 4, 4)
    pseudo = torch.stack([torch.full((3, 4, 4), v) for v in (0.2, 0.9, 0.4)])
    has = torch.tensor([True, False, True])
    ctx = LossContext(restored=restored, degraded=restored, pseudo_label=pseudo, has_pseudo=has)
    term = PseudoLabelLoss()
    assert term.applies(ctx)
    assert float(term(ctx)) == pytest.approx(
        0.3
    )  # (0.2 + 0.4) / 2: the row without a pseudo-label is ignored
    none = LossContext(
        restored=restored, degraded=restored, pseudo_label=pseudo, has_pseudo=torch.zeros(3).bool()
    )
    assert not term.applies(none)
    assert not term.applies(LossContext(restored=restored, degraded=restored))


def test_supervised_loss_needs_a_target() -> None:
    x = torch.rand(2, 3, 4, 4)
    term = SupervisedLoss(PixelLoss("l1"))
    assert not term.applies(LossContext(restored=x, degraded=x))
    ctx = LossContext(restored=x, degraded=x, target=x + 0.25)
    assert term.applies(ctx) and float(term(ctx)) == pytest.approx(0.25)


# ---- encoder terms ---------------------------------------------------------------------------------------------


def test_depth_feature_loss_is_zero_for_identical_images(depth: FrozenDepthEncoder) -> None:
    torch.manual_seed(0)
    term = DepthFeatureLoss(depth)
    x = torch.rand(2, 3, 32, 32)
    same = LossContext(restored=x.clone(), degraded=torch.rand(2, 3, 32, 32), pseudo_label=x.clone())
    assert float(term(same)) == pytest.approx(0.0, abs=1e-6)
    other = LossContext(restored=x, degraded=x, pseudo_label=torch.rand(2, 3, 32, 32))
    assert float(term(other)) > 1e-3
    # Rows without a pseudo-label compare to the input instead.
    mixed = LossContext(
        restored=x,
        degraded=x.clone(),
        pseudo_label=torch.rand(2, 3, 32, 32),
        has_pseudo=torch.tensor([False, False]),
    )
    assert float(term(mixed)) == pytest.approx(0.0, abs=1e-6)


def test_depth_feature_loss_trains_the_image_not_the_encoder(depth: FrozenDepthEncoder) -> None:
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in depth.state_dict().items()}
    restored = torch.rand(1, 3, 32, 32, requires_grad=True)
    reference = torch.rand(1, 3, 32, 32)
    term = DepthFeatureLoss(depth)
    optimizer = torch.optim.Adam([restored], lr=0.05)
    values = []
    for _ in range(5):
        value = term(LossContext(restored=restored, degraded=reference))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        values.append(float(value.detach()))
    assert values[-1] < values[0]
    assert all(p.grad is None for p in depth.parameters())
    assert all(torch.equal(v, before[k]) for k, v in depth.state_dict().items())


def test_semantic_loss_prefers_the_image_closer_to_d_pos(clip: FrozenCLIP) -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32)
    d_pos, d_neg = "The weather looks good. A street.", "A rainy street."
    term = SemanticLoss(clip)
    per_image = torch.stack(
        [
            term(LossContext(restored=im[None], degraded=im[None], d_pos=[d_pos], d_neg=[d_neg]))
            for im in images
        ]
    )
    with torch.no_grad():
        image = clip.encode_image(images)
        text = clip.encode_text([d_pos, d_neg])
    margin = image @ text[0] - image @ text[1]  # how much closer to d_pos than to d_neg
    # L_sem = -log sigmoid(s * margin): lower loss exactly for the images closer to d_pos.
    torch.testing.assert_close(per_image, -F.logsigmoid(clip.logit_scale * margin))
    assert int(per_image.argmin()) == int(margin.argmax())
    assert int(per_image.argmax()) == int(margin.argmin())


def test_semantic_loss_checks_description_counts(clip: FrozenCLIP) -> None:
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="d_pos"):
        SemanticLoss(clip)(LossContext(restored=x, degraded=x, d_pos=["a"], d_neg=["b", "c"]))


def test_text_cache_encodes_each_string_once(clip: FrozenCLIP) -> None:
    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def encode_text(self, texts: list[str]) -> torch.Tensor:
            self.seen.extend(texts)
            return clip.encode_text(texts)

    counting = Counting()
    cache = TextEmbeddingCache(counting)
    first = cache(["rain", "clear", "rain"])
    second = cache(["clear", "snow", "rain"])
    assert sorted(counting.seen) == ["clear", "rain", "snow"]
    assert cache.encoded == 3
    torch.testing.assert_close(first[0], second[2])
    torch.testing.assert_close(second, clip.encode_text(["clear", "snow", "rain"]))


# ---- composite -------------------------------------------------------------------------------------------------


def test_zero_weight_terms_are_never_built_or_run() -> None:
    clip, depth = Recorder(), Recorder()
    loss = build_composite_loss(weights(sup=1.0, ps=0.5), clip=clip, depth=depth)
    assert loss.names == ["sup", "ps"]
    x = torch.rand(2, 3, 8, 8)
    ctx = LossContext(
        restored=x,
        degraded=x,
        target=x * 0.5,
        pseudo_label=x * 0.0,
        has_pseudo=torch.tensor([True, True]),
        d_pos=["a", "b"],
        d_neg=["c", "d"],
    )
    total, values = loss(ctx)
    assert set(values) == {"sup", "ps"}
    assert clip.calls == [] and depth.calls == []
    torch.testing.assert_close(total, values["sup"] + 0.5 * values["ps"])
    # And no encoder is needed at all when its terms are off.
    assert build_composite_loss(weights(sup=1.0)).names == ["sup"]


def test_missing_encoder_for_a_weighted_term_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"loss\.weights\.feat"):
        build_composite_loss(weights(feat=0.2))
    with pytest.raises(ValueError, match=r"loss\.weights\.sem"):
        build_composite_loss(weights(sem=0.05))


def test_composite_returns_every_term_and_skips_absent_inputs(
    clip: FrozenCLIP, depth: FrozenDepthEncoder
) -> None:
    torch.manual_seed(0)
    prompts = WeatherPrompts(clip, context_len=2).freeze()
    cfg = weights(sup=1.0, ps=0.5, wpl=0.2, sem=0.05, feat=0.2)
    loss = build_composite_loss(cfg, clip=clip, depth=depth, prompts=prompts)
    assert all(isinstance(term, LossTerm) for term in loss.terms)
    assert loss.names == ["sup", "ps", "wpl", "sem", "feat"]
    clip_before = {k: v.clone() for k, v in clip.state_dict().items()}

    restored = torch.rand(2, 3, 32, 32, requires_grad=True)
    real = LossContext(
        restored=restored,
        degraded=torch.rand(2, 3, 32, 32),
        pseudo_label=torch.rand(2, 3, 32, 32),
        has_pseudo=torch.tensor([True, False]),
        d_pos=["clear street", "clear hill"],
        d_neg=["rain", "snow"],
    )
    total, values = loss(real)
    assert set(values) == {"ps", "wpl", "sem", "feat"}  # no target on a real batch: "sup" skipped, not zero
    expected = sum(getattr(cfg.weights, name) * value for name, value in values.items())
    torch.testing.assert_close(total.detach(), expected)
    assert all(not v.requires_grad for v in values.values())
    total.backward()
    assert restored.grad is not None and restored.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())
    assert all(torch.equal(v, clip_before[k]) for k, v in clip.state_dict().items())

    synthetic = LossContext(restored=restored.detach(), degraded=restored.detach(), target=restored.detach())
    _, values = loss(synthetic)
    assert values["sup"] == 0 and "ps" not in values and "sem" not in values


def test_srd_term_plugs_in_lazily(clip: FrozenCLIP) -> None:
    loss = build_composite_loss(weights(sup=1.0, srd=0.1), clip=clip)
    assert loss.names == ["sup", "srd"]
    with pytest.raises(ValueError, match=r"loss\.weights\.srd"):
        build_composite_loss(weights(srd=0.1))


def test_duplicate_term_names_are_rejected() -> None:
    pixel = SupervisedLoss(PixelLoss())
    with pytest.raises(ValueError, match="duplicate"):
        CompositeLoss([(pixel, 1.0), (SupervisedLoss(PixelLoss()), 2.0)])
