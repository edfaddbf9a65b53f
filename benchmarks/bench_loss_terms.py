"""Benchmark the cost of each loss term against a backbone training step (forward + L1 + backward).

Every term of ``LossConfig.weights`` (``sup``, ``ps``, ``wpl``, ``sem``, ``feat``, ``srd``) is timed alone: its forward
and backward on a restored batch that is a leaf tensor, i.e. the *extra* cost the term adds to a training step (the
backbone's own forward/backward is not repeated). The reference is one backbone step of
``build_model(ModelConfig())`` (forward, L1 loss, backward; no optimiser update, as in ``bench_backbones.py``),
measured in the same run. Each figure is the fastest of ``--steps`` timed runs after ``--warmup`` untimed ones
(robust to other load on a shared CPU). ``sem`` is timed with its text cache warm (each description is encoded
once per run, so steady-state training pays only the image tower). ``wpl`` uses untrained, frozen prompts: the
cost does not depend on what the prompts learned.

By default the encoders are the tiny random CLIP / Depth Anything built locally; ``--real`` uses the config's real
model names (ViT-B-32 ``openai``, Depth-Anything-V2-Small), which need their weights in the local caches (this
platform never downloads them in tests).

    python benchmarks/bench_loss_terms.py                      # tiny encoders, 256x256, batch 4, 2 threads
    python benchmarks/bench_loss_terms.py --real --device cuda  # real encoders where their weights are cached
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
import torch.nn.functional as F

from fairweather.contracts.config.encoders import CLIPEncoderConfig, DepthEncoderConfig
from fairweather.contracts.config.loss import LossConfig
from fairweather.contracts.config.model import ModelConfig
from fairweather.encoders import FrozenCLIP, FrozenDepthEncoder
from fairweather.losses import LossContext, WeatherPrompts, build_composite_loss
from fairweather.models import build_model
from step_args import add_step_args, fastest_ms, parse_step_args


def build_encoders(args: argparse.Namespace) -> tuple[FrozenCLIP, FrozenDepthEncoder]:
    clip_cfg = CLIPEncoderConfig() if args.real else CLIPEncoderConfig(model_name="tiny:clip")
    depth_cfg = DepthEncoderConfig() if args.real else DepthEncoderConfig(model_id="tiny:depth-anything")
    depth_cfg = dataclasses.replace(depth_cfg, input_size=args.depth_input_size or depth_cfg.input_size)
    clip = FrozenCLIP.from_config(clip_cfg, args.cache_dir)
    depth = FrozenDepthEncoder.from_config(depth_cfg, args.cache_dir)
    return clip, depth


def measure_backbone(args: argparse.Namespace, device: torch.device) -> float:
    """One training step of ``build_model(ModelConfig())``: forward, L1, backward (ms)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig()).train().to(device)
    shape = (args.batch, 3, args.size, args.size)
    x, target = torch.rand(shape, device=device), torch.rand(shape, device=device)

    def backbone_step() -> None:
        model.zero_grad(set_to_none=True)
        F.l1_loss(model(x), target).backward()

    return fastest_ms(backbone_step, args.warmup, args.steps, device)


def measure_terms(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """{term name: forward+backward ms} for every term, each on a leaf restored batch."""
    torch.manual_seed(0)
    shape = (args.batch, 3, args.size, args.size)
    clip, depth = build_encoders(args)
    clip, depth = clip.to(device), depth.to(device)
    prompts = WeatherPrompts(clip, LossConfig().prompt_context_len).freeze()
    # Every term with a non-zero weight, so each one is built exactly as training builds it.
    all_on = LossConfig(weights=dataclasses.replace(LossConfig().weights, srd=0.1))
    terms = build_composite_loss(all_on, clip=clip, depth=depth, prompts=prompts).terms

    restored = torch.rand(shape, device=device, requires_grad=True)
    gh, gw = clip.grid_size
    sar_residual = torch.randn(args.batch, clip.token_dim, gh, gw, device=device, requires_grad=True)
    ctx = LossContext(
        domain="paired",
        restored=restored,
        degraded=torch.rand(shape, device=device),
        target=torch.rand(shape, device=device),
        pseudo_label=torch.rand(shape, device=device),
        has_pseudo=torch.ones(args.batch, dtype=torch.bool, device=device),
        d_pos=[f"The weather looks good. A street, picture {i}." for i in range(args.batch)],
        d_neg=[f"A rainy street, picture {i}." for i in range(args.batch)],
        aux={"sar_residual": sar_residual},
    )

    results = {}
    for term in terms:

        def term_step(term=term) -> None:
            restored.grad, sar_residual.grad = None, None
            term(ctx).backward()

        results[term.name] = fastest_ms(term_step, args.warmup, args.steps, device)
    return results


def markdown_table(backbone_ms: float, results: dict[str, float]) -> str:
    lines = [
        "| term | fwd+bwd ms | / backbone step |",
        "|---|---|---|",
        f"| backbone step ({ModelConfig().arch}) | {backbone_ms:.1f} | 1.00 |",
    ]
    lines += [f"| {name} | {ms:.1f} | {ms / backbone_ms:.3f} |" for name, ms in results.items()]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--real", action="store_true", help="real CLIP / Depth Anything names from the config"
    )
    parser.add_argument("--cache-dir", default="runs/models", help="where tiny models are built (and cached)")
    parser.add_argument(
        "--depth-input-size", type=int, default=None, help="Depth Anything input side (default: config's)"
    )
    add_step_args(parser)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    return parse_step_args(parser, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    backbone_ms = measure_backbone(args, device)
    results = measure_terms(args, device)
    encoders = "real" if args.real else "tiny"
    print(
        f"Loss terms vs. one backbone step, batch {args.batch} x 3 x {args.size} x {args.size}, {encoders} encoders, "
        f"{args.device}, {args.threads} threads, fastest of {args.steps} after {args.warmup} warm-up:\n"
    )
    print(markdown_table(backbone_ms, results))


if __name__ == "__main__":
    main()
