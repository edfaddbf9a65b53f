"""Paper A's loss terms and the weighted composite: hand-made values, skipping rules, gradients, text cache."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fairweather.contracts.config import ConfigError, load_config
from fairweather.contracts.config.loss import LossConfig, LossDomains, LossWeights
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
    ctx = LossContext(
        domain="real", restored=restored, degraded=restored, pseudo_label=pseudo, has_pseudo=has
    )
    term = PseudoLabelLoss()
    assert term.applies(ctx)
    assert float(term(ctx)) == pytest.approx(
        0.3
    )  # (0.2 + 0.4) / 2: the row without a pseudo-label is ignored
    none = LossContext(
        domain="real",
        restored=restored,
        degraded=restored,
        pseudo_label=pseudo,
        has_pseudo=torch.zeros(3).bool(),
    )
    assert not term.applies(none)
    assert not term.applies(LossContext(domain="real", restored=restored, degraded=restored))


def test_supervised_loss_needs_a_target() -> None:
    x = torch.rand(2, 3, 4, 4)
    term = SupervisedLoss(PixelLoss("l1"))
    assert not term.applies(LossContext(domain="real", restored=x, degraded=x))
    ctx = LossContext(domain="paired", restored=x, degraded=x, target=x + 0.25)
    assert term.applies(ctx) and float(term(ctx)) == pytest.approx(0.25)


# ---- encoder terms ---------------------------------------------------------------------------------------------


def test_depth_feature_loss_is_zero_for_identical_images(depth: FrozenDepthEncoder) -> None:
    torch.manual_seed(0)
    term = DepthFeatureLoss(depth)
    x = torch.rand(2, 3, 32, 32)
    same = LossContext(
        domain="real", restored=x.clone(), degraded=torch.rand(2, 3, 32, 32), pseudo_label=x.clone()
    )
    assert float(term(same)) == pytest.approx(0.0, abs=1e-6)
    other = LossContext(domain="real", restored=x, degraded=x, pseudo_label=torch.rand(2, 3, 32, 32))
    assert float(term(other)) > 1e-3
    # Rows without a pseudo-label compare to the input instead.
    mixed = LossContext(
        domain="real",
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
        value = term(LossContext(domain="real", restored=restored, degraded=reference))
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
            term(
                LossContext(domain="real", restored=im[None], degraded=im[None], d_pos=[d_pos], d_neg=[d_neg])
            )
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
        SemanticLoss(clip)(LossContext(domain="real", restored=x, degraded=x, d_pos=["a"], d_neg=["b", "c"]))


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


def both_domains(n: int = 2, size: int = 8) -> tuple[LossContext, LossContext]:
    """A paired and a real context with every input a term could read (seeded)."""
    gen = torch.Generator().manual_seed(0)
    image = lambda: torch.rand(n, 3, size, size, generator=gen)  # noqa: E731
    paired = LossContext(restored=image(), degraded=image(), domain="paired", target=image())
    real = LossContext(
        restored=image(),
        degraded=image(),
        domain="real",
        pseudo_label=image(),
        has_pseudo=torch.ones(n, dtype=torch.bool),
        d_pos=[f"clear {i}" for i in range(n)],
        d_neg=[f"rainy {i}" for i in range(n)],
    )
    return paired, real


def test_zero_weight_terms_are_never_built_or_run() -> None:
    clip, depth = Recorder(), Recorder()
    loss = build_composite_loss(weights(sup=1.0, ps=0.5), clip=clip, depth=depth)
    assert loss.names == ["sup", "ps"] and not loss.needs_aux
    paired, real = both_domains()
    total, values, applied = loss(paired, real)
    assert applied.tolist() == [True, True]
    assert clip.calls == [] and depth.calls == []
    torch.testing.assert_close(total, values[0] + 0.5 * values[1])
    # And no encoder is needed at all when its terms are off.
    assert build_composite_loss(weights(sup=1.0)).names == ["sup"]


def test_missing_encoder_for_a_weighted_term_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"loss\.weights\.feat"):
        build_composite_loss(weights(feat=0.2))
    with pytest.raises(ValueError, match=r"loss\.weights\.sem"):
        build_composite_loss(weights(sem=0.05))


def test_terms_act_on_their_method_domains_by_default(clip: FrozenCLIP, depth: FrozenDepthEncoder) -> None:
    torch.manual_seed(0)
    prompts = WeatherPrompts(clip, context_len=2).freeze()
    cfg = weights(sup=1.0, ps=0.5, wpl=0.2, sem=0.05, feat=0.2)
    loss = build_composite_loss(cfg, clip=clip, depth=depth, prompts=prompts)
    assert all(isinstance(term, LossTerm) for term in loss.terms)
    assert loss.names == ["sup", "ps", "wpl", "sem", "feat"]
    paired, real = both_domains(size=32)
    # A paired batch feeds only L_sup: wpl and feat never look at synthetic pairs (METHOD.md).
    _, values, applied = loss(paired)
    assert applied.tolist() == [True, False, False, False, False]
    assert values[1:].abs().sum() == 0 and values[0] > 0
    _, _, applied = loss(real)
    assert applied.tolist() == [False, True, True, True, True]
    _, _, applied = loss(paired, real)
    assert applied.all()


def test_domains_are_configurable_and_a_term_on_two_domains_averages(clip: FrozenCLIP) -> None:
    prompts = WeatherPrompts(clip, context_len=2).freeze()
    cfg = dataclasses.replace(weights(sup=1.0, wpl=0.2), domains=LossDomains(wpl=("paired", "real")))
    loss = build_composite_loss(cfg, clip=clip, prompts=prompts)
    paired, real = both_domains(size=32)
    wpl = loss.terms[1]
    _, values, applied = loss(paired, real)
    assert applied.tolist() == [True, True]
    expected = (wpl(paired) + wpl(real)) / 2  # the mean over domains: the weight means the same on one or two
    torch.testing.assert_close(values[1], expected.detach())
    assert build_composite_loss(weights(sup=1.0, wpl=0.2), clip=clip, prompts=prompts)(
        paired
    ).applied.tolist() == [
        True,
        False,
    ]


def test_values_are_a_fixed_order_vector_with_an_applied_mask(
    clip: FrozenCLIP, depth: FrozenDepthEncoder
) -> None:
    torch.manual_seed(0)
    prompts = WeatherPrompts(clip, context_len=2).freeze()
    cfg = weights(sup=1.0, ps=0.5, wpl=0.2, sem=0.05, feat=0.2)
    loss = build_composite_loss(cfg, clip=clip, depth=depth, prompts=prompts)
    clip_before = {k: v.clone() for k, v in clip.state_dict().items()}
    paired, real = both_domains(size=32)
    real.restored.requires_grad_(True)
    real.has_pseudo = torch.tensor([False, False])  # no pseudo-label yet: "ps" skipped, not zero
    real.d_pos = real.d_neg = None  # no descriptions: "sem" skipped
    total, values, applied = loss(paired, real)
    assert values.shape == applied.shape == (5,) and values.dtype == torch.float32
    assert applied.tolist() == [True, False, True, False, True]
    assert values[~applied].abs().sum() == 0 and not values.requires_grad
    expected = sum(getattr(cfg.weights, name) * values[i] for i, name in enumerate(loss.names))
    torch.testing.assert_close(total.detach(), expected)
    total.backward()
    assert real.restored.grad is not None and real.restored.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())
    assert all(torch.equal(v, clip_before[k]) for k, v in clip.state_dict().items())
    # Nothing applies: a zero total and an all-false mask, same shapes.
    total, values, applied = loss(dataclasses.replace(real, domain="paired", target=None))
    assert float(total) == 0 and not applied.any() and values.shape == (5,)


def test_srd_term_needs_clip_and_asks_for_side_outputs(clip: FrozenCLIP) -> None:
    loss = build_composite_loss(weights(sup=1.0, srd=0.1), clip=clip)
    assert loss.names == ["sup", "srd"] and loss.needs_aux
    with pytest.raises(ValueError, match=r"loss\.weights\.srd"):
        build_composite_loss(weights(srd=0.1))


def test_duplicate_term_names_and_domainless_terms_are_rejected() -> None:
    pixel = SupervisedLoss(PixelLoss())
    with pytest.raises(ValueError, match="duplicate"):
        CompositeLoss([(pixel, 1.0), (SupervisedLoss(PixelLoss()), 2.0)])
    with pytest.raises(ValueError, match="no domain"):
        CompositeLoss([(pixel, 1.0)], domains={"sup": ()})


def test_loss_config_rejects_out_of_range_values() -> None:
    for override, key in [
        ("loss.weights.ps=-0.1", "loss.weights.ps"),
        ("loss.charbonnier_eps=0", "loss.charbonnier_eps"),
        ("loss.prompt_context_len=0", "loss.prompt_context_len"),
        ("loss.prompt_fit_lr=0", "loss.prompt_fit_lr"),
        ("loss.prompt_fit_batch_size=0", "loss.prompt_fit_batch_size"),
        ("loss.prompt_fit_steps=-1", "loss.prompt_fit_steps"),
        ("loss.domains.wpl=[]", "loss.domains.wpl"),
        ("loss.domains.wpl=[real, real]", "loss.domains.wpl"),
        ("loss.domains.wpl=[synthetic]", "loss.domains.wpl"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_config("smoke", [override])
    assert load_config("smoke", ["loss.domains.wpl=[paired, real]"]).loss.domains.wpl == ("paired", "real")
    with pytest.raises(ValueError, match="must be >= 0"):  # NaN is never a valid weight, built in code or not
        LossWeights(ps=float("nan"))


def test_losses_package_has_no_hidden_import_cycle() -> None:
    """Terms import the context module, the composite imports the terms, and nothing imports inside a function."""
    import ast
    from pathlib import Path

    import fairweather.losses

    folder = Path(fairweather.losses.__file__).parent
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        functions = [
            node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        lazy = [n for f in functions for n in ast.walk(f) if isinstance(n, ast.Import | ast.ImportFrom)]
        assert not lazy, f"{path.name} imports inside a function (line {lazy[0].lineno})"
        if path.stem not in ("composite", "__init__"):
            imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            assert not any(m and m.endswith("composite") for m in imported), (
                f"{path.name} imports the composite"
            )


def test_whether_a_term_is_on_is_decided_in_one_place():
    """``LossWeights.on`` decides it; no module compares a weight with 0 itself (six places used to)."""
    from pathlib import Path

    from fairweather.contracts.config.loss import LossWeights

    weights = LossWeights(wpl=0.0, sem=0.01)
    assert not weights.on("wpl") and weights.on("sem") and weights.on("sup")
    package = Path(__file__).resolve().parents[1] / "platform" / "fairweather"
    compare = re.compile(r"weights\.(sup|ps|wpl|sem|feat|srd)\s*(>|>=|<|<=|==|!=)\s*0")
    quoted = re.compile(r"\"[^\"]*\"|'[^']*'")  # messages may say "loss.weights.wpl > 0 needs ..."
    found = [
        f"{path.relative_to(package)}:{n}"
        for path in package.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if compare.search(quoted.sub("", line)) and not line.lstrip().startswith("#")
    ]
    assert not found, f"decide with LossWeights.on(term): {found}"
