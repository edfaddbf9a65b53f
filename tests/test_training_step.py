"""One training step (science layer, one process): one forward over both domains, the split per domain, the NaN
guard, bf16 autocast on CPU, and resume equivalence (10 + checkpoint + 10 steps == 20 straight steps)."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from fairweather.contracts.config.loss import LossConfig, LossWeights
from fairweather.contracts.config.model import ModelConfig, NAFNetConfig
from fairweather.losses import CompositeLoss, LossContext, build_composite_loss
from fairweather.models import build_model
from fairweather.training.ema import build_teacher, ema_update
from fairweather.training.step import NonFiniteLossError, TrainBatch, freeze_unread_heads, train_step

#: A tiny NAFNet (one level): the step's logic, not the network, is under test here.
NAFNET = ModelConfig(
    arch="nafnet", nafnet=NAFNetConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,))
)
PIXEL_ONLY = LossConfig(weights=LossWeights(sup=1.0, ps=0.5, wpl=0.0, sem=0.0, feat=0.0, srd=0.0))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread, and a second one only fights the other processes of a busy CPU
    (measured here: 5 steps took 0.16 s on one thread, 1.3-19 s on two under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch(seed: int, paired: int = 2, real: int = 2, size: int = 16) -> TrainBatch:
    """A seeded batch; the first real row has a pseudo-label, the others do not."""
    gen = torch.Generator().manual_seed(seed)
    image = lambda n: torch.rand(n, 3, size, size, generator=gen)  # noqa: E731
    return TrainBatch(
        paired_input=image(paired),
        paired_target=image(paired),
        real_input=image(real),
        real_pseudo=image(real),
        real_has_pseudo=torch.arange(real) == 0,
        d_pos=[f"clear {i}" for i in range(real)],
        d_neg=[f"rainy {i}" for i in range(real)],
    )


class Probe(nn.Module):
    """A loss term that records what each domain's context held, and can turn NaN on demand."""

    needs_aux = False

    def __init__(self, name: str, poison: bool = False):
        super().__init__()
        self.name, self.poison, self.seen = name, poison, []

    def applies(self, ctx: LossContext) -> bool:
        return True

    def forward(self, ctx: LossContext) -> torch.Tensor:
        self.seen.append((ctx.domain, ctx.restored.shape[0], ctx.target is not None, ctx.d_pos))
        value = ctx.restored.mean()
        return value * math.nan if self.poison else value


def test_one_forward_over_both_domains_split_per_domain() -> None:
    torch.manual_seed(0)
    model = build_model(NAFNET).train()
    forwards = []
    model.register_forward_hook(lambda _m, args, _out: forwards.append(args[0].shape[0]))
    probe = Probe("probe")
    loss = CompositeLoss([(probe, 1.0)], domains={"probe": ("paired", "real")})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    result = train_step(model, loss, optimizer, batch(0, paired=2, real=3), step=0, grad_clip=0.5)
    assert forwards == [5]  # one forward of the 2 paired + 3 real images
    assert probe.seen == [("paired", 2, True, None), ("real", 3, False, ["clear 0", "clear 1", "clear 2"])]
    assert result.terms.dtype == torch.float64 and result.terms.device.type == "cpu"
    assert result.terms.shape == result.applied.shape == (1,) and result.applied.tolist() == [True]
    assert math.isfinite(result.loss) and result.grad_norm > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())  # zero_grad(set_to_none=True) after the step
    # No real batch: the paired images alone.
    forwards.clear()
    full = batch(1, paired=2)
    train_step(model, loss, optimizer, TrainBatch(full.paired_input, full.paired_target), step=1)
    assert forwards == [2]


def test_a_step_where_no_term_applies_still_runs() -> None:
    """Under DDP every rank must back-propagate every step; a rank whose batch fed no term gets zero gradients."""
    model = build_model(NAFNET).train()
    loss = build_composite_loss(LossConfig(weights=LossWeights(sup=0.0, ps=1.0, wpl=0.0, sem=0.0, feat=0.0)))
    no_pseudo = batch(0)
    no_pseudo.real_has_pseudo = torch.zeros(2, dtype=torch.bool)
    result = train_step(model, loss, torch.optim.SGD(model.parameters(), lr=0.1), no_pseudo, step=0)
    assert result.applied.tolist() == [False] and result.loss == 0 and result.grad_norm == 0


def test_non_finite_term_stops_before_the_optimizer_step() -> None:
    torch.manual_seed(0)
    model = build_model(NAFNET).train()
    loss = CompositeLoss([(Probe("sup"), 1.0), (Probe("feat", poison=True), 0.2)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(NonFiniteLossError, match=r"feat=nan.*step 7") as error:
        train_step(model, loss, optimizer, batch(0), step=7, scheduler=scheduler)
    assert "sup" not in str(error.value).split("step")[0]  # only the poisoned term is named
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.grad is None  # the poisoned gradient is gone, not left for a later step
    assert optimizer.state == {} or all(not s for s in optimizer.state.values())
    assert scheduler.last_epoch == 0


def test_non_finite_gradient_with_finite_terms_is_caught() -> None:
    """A finite loss with a NaN gradient (what a NaN on another DDP rank looks like here) is refused too."""

    class Kink(Probe):
        def forward(self, ctx: LossContext) -> torch.Tensor:
            return (ctx.restored - ctx.restored.detach()).sqrt().sum()  # value 0, gradient inf * 0 = NaN

    model = build_model(NAFNET).train()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match=r"gradient norm.*step 3"):
        train_step(
            model,
            CompositeLoss([(Kink("sup"), 1.0)]),
            torch.optim.SGD(model.parameters(), lr=0.1),
            batch(0),
            step=3,
        )
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_bf16_autocast_on_cpu() -> None:
    torch.manual_seed(0)
    model = build_model(NAFNET).train()
    loss = build_composite_loss(PIXEL_ONLY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    result = train_step(
        model, loss, optimizer, batch(0), step=0, autocast_dtype=torch.bfloat16, grad_clip=1.0
    )
    assert (
        math.isfinite(result.loss)
        and result.applied.all()
        and next(model.parameters()).dtype == torch.float32
    )


def test_unread_side_output_heads_are_frozen(clip) -> None:
    cfg = ModelConfig(arch="clip_prior")
    model = build_model(cfg, clip)
    freeze_unread_heads(model, build_composite_loss(PIXEL_ONLY))
    assert not any(p.requires_grad for p in model.srd_head.parameters())
    model = build_model(cfg, clip)
    with_srd = LossConfig(weights=LossWeights(sup=1.0, ps=0.0, wpl=0.0, sem=0.0, feat=0.0, srd=0.1))
    freeze_unread_heads(model, build_composite_loss(with_srd, clip=clip))
    assert all(p.requires_grad for p in model.parameters())


# ---- resume equivalence ----------------------------------------------------------------------------------------


def fresh_run() -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    model = build_model(NAFNET).train()
    teacher = build_teacher(NAFNET, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    # Warm-up then cosine, as the training loop does, so the scheduler state matters.
    schedule = lambda s: min(1.0, (s + 1) / 5) * 0.5 * (1 + math.cos(math.pi * s / 20))  # noqa: E731
    return model, teacher, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def run_steps(run, loss: CompositeLoss, steps: range) -> list[float]:
    model, teacher, optimizer, scheduler = run
    losses = []
    for step in steps:
        # Data drawn from the global RNG, so a resume that forgot the RNG state would see other batches.
        seed = int(torch.randint(0, 2**31 - 1, ()))
        result = train_step(
            model, loss, optimizer, batch(seed), step=step, grad_clip=1.0, scheduler=scheduler
        )
        ema_update(teacher, model, 0.9)
        losses.append(result.loss)
    return losses


def test_resume_equals_straight_run() -> None:
    loss = build_composite_loss(PIXEL_ONLY)
    torch.manual_seed(0)
    straight = fresh_run()
    straight_losses = run_steps(straight, loss, range(20))

    torch.manual_seed(0)
    first = fresh_run()
    resumed_losses = run_steps(first, loss, range(10))
    model, teacher, optimizer, scheduler = first
    state = {
        "model": model.state_dict(),
        "teacher": teacher.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "step": 10,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    del first, model, teacher, optimizer, scheduler
    torch.manual_seed(123)  # a restarted process: another RNG state and freshly initialised objects
    restored = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    second = fresh_run()
    model, teacher, optimizer, scheduler = second
    model.load_state_dict(restored["model"])
    teacher.load_state_dict(restored["teacher"])
    optimizer.load_state_dict(restored["optimizer"])
    scheduler.load_state_dict(restored["scheduler"])
    torch.set_rng_state(restored["rng"])
    resumed_losses += run_steps(second, loss, range(restored["step"], 20))

    assert resumed_losses == pytest.approx(straight_losses, rel=1e-5, abs=1e-7)
    for name, value in straight[1].state_dict().items():
        torch.testing.assert_close(teacher.state_dict()[name], value)
    assert straight_losses[-1] < straight_losses[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_channels_last_step_and_nccl_reduce(model_cache, tmp_path) -> None:
    """On a GPU node: the CLIP-prior net with every term on trains in bf16 autocast and channels-last, the shared
    encoders placed on the GPU by their creator, and the term reduction runs over NCCL (world size 1)."""
    import torch.distributed as dist

    from fairweather.contracts.config.encoders import CLIPEncoderConfig, DepthEncoderConfig
    from fairweather.encoders import FrozenCLIP, FrozenDepthEncoder
    from fairweather.losses import WeatherPrompts
    from fairweather.training.step import reduce_step_terms

    device = torch.device("cuda")
    clip = FrozenCLIP.from_config(CLIPEncoderConfig(model_name="tiny:clip"), model_cache).to(device)
    depth = FrozenDepthEncoder.from_config(
        DepthEncoderConfig(model_id="tiny:depth-anything", input_size=28), model_cache
    ).to(device)
    prompts = WeatherPrompts(clip, context_len=2).freeze()
    cfg = ModelConfig(arch="clip_prior")
    model = build_model(cfg, clip).to(device, memory_format=torch.channels_last).train()
    teacher = build_teacher(cfg, model)
    every_term = LossConfig(weights=LossWeights(sup=1.0, ps=0.5, wpl=0.2, sem=0.05, feat=0.2, srd=0.1))
    loss = build_composite_loss(every_term, clip=clip, depth=depth, prompts=prompts)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    results = []
    for step in range(3):
        on_gpu = batch(step, size=32).to(device, torch.channels_last)
        results.append(
            train_step(
                model, loss, optimizer, on_gpu, step=step, grad_clip=1.0, autocast_dtype=torch.bfloat16
            )
        )
        ema_update(teacher, model, 0.9)
    assert all(math.isfinite(r.loss) and r.applied.all() for r in results)
    assert next(teacher.parameters()).device.type == "cuda" and teacher.clip is clip
    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        reduced = reduce_step_terms(results, loss.names)
    finally:
        dist.destroy_process_group()
    assert set(reduced) == set(loss.names)
