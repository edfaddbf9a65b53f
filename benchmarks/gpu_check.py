"""One-call GPU check for a lent machine: throughput, CPU/GPU agreement, big-image restore, tiny-VLM rating, DDP.

Run it through ``benchmarks/gpu_check.sh OUT.json`` (puts ``platform/`` on ``PYTHONPATH``, works offline). It needs
only PyTorch and transformers (+ numpy, Pillow, PyYAML, pyarrow, which transformers' machines carry): no Ray, MLflow,
open_clip or pyiqa, no network, no installed ``fairweather`` package. The JSON it writes names every forbidden module
that got imported anyway (``forbidden_modules_loaded``: must stay empty).

Sections (each wrapped: a failure records its error string and the others still run; the JSON is rewritten after
every section, so a run killed by the outer ``timeout`` still leaves what finished, and the section that was
running is marked ``"status": "running"``):

``env``         torch / CUDA / cuDNN / transformers versions, the GPU's name, memory and capability.
``vlm``         the tiny LLaVA (``fairweather.tiny``, built in a temp folder) rates the same images on CPU and on
                the GPU through ``fairweather.vlm.rate_images`` (transformers backend, float32); r_vlm must agree
                within 1e-3 (the tolerance of ``tests/test_gpu.py``'s vLLM check).
``loss``        the project's training step (``fairweather.training.step.train_step`` on the parts of
                ``build_training_parts``: the paper profile's MSBDN, AdamW + warm-up schedule, grad clip) run on CPU
                and on the GPU from the same seed and batch, float32 (TF32 off), channels-last on both as the
                training loop does; the loss of every step must agree within ``rtol``. Terms: the paper weights of
                ``sup``, ``ps`` and ``feat`` (Depth Anything = the tiny random one, built by transformers);
                ``wpl``, ``sem`` and ``srd`` need CLIP, i.e. open_clip, which the lent machine lacks, so they are 0.
                Also recorded, not checked: the same steps on the GPU with TF32 on and under bf16 autocast.
``throughput``  images/s of ``train_step`` per backbone (every arch of ``fairweather.models.BUILDERS``, the paper's
                sizes), bf16 autocast + channels-last, the paper's crop (``train.crop_size``) and batch
                (``train.batch_size`` pairs + ``train.real_batch_size`` real images in one forward), loss terms
                ``sup`` + ``ps``; warm-up steps, then timed steps between ``torch.cuda.synchronize`` calls; peak GPU
                memory per backbone. ``clip_prior`` needs a CLIP: a random ViT-B/32 image tower built with
                transformers stands in for open_clip's (same sizes, so the same cost).
``tiled``       ``fairweather.models.restore_tiled`` of a 24-Mpx (6000 x 4000) image with the paper's MSBDN, tile
                and overlap, float32 as ``training.validate.restore_image`` does (and once more under bf16 autocast,
                for information): wall time (host uint8 -> restored host tensor, and GPU-only) and
                ``torch.cuda.max_memory_allocated``.
``ddp``         ``torch.distributed`` with one process on NCCL (gloo on CPU): an ``all_reduce``, one DDP-wrapped
                ``train_step`` and the project's ``reduce_step_terms`` over the process group.
``gpu_tests``   ``pytest -m gpu tests/test_gpu.py`` in a subprocess (collection only without CUDA).

Without CUDA (or with ``--cpu-smoke``) every section runs on CPU at tiny sizes in a few seconds: the CI suite runs
it that way (``tests/test_gpu_check.py``) so the script cannot rot.

    bash benchmarks/gpu_check.sh "$OUT/gpu_check.json"            # on the GPU machine, < 8 min
    bash benchmarks/gpu_check.sh /tmp/gpu_check.json --cpu-smoke  # here
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import inspect
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: What the lent GPU machine does not have: importing any of them would fail there.
FORBIDDEN = ("ray", "mlflow", "open_clip", "pyiqa")
SECTIONS = ("env", "vlm", "loss", "throughput", "tiled", "gpu_tests", "ddp")  # ddp last: NCCL could hang


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes and time caps of one run: :data:`FULL` on a GPU, :data:`SMOKE` on CPU."""

    name: str
    paper_sizes: bool  # paper-profile network sizes (else the tiny ModelConfig() defaults)
    crop: int | None  # None: the paper's train.crop_size
    batch: tuple[int, int] | None  # (pairs, real images); None: the paper's train.batch_size, real_batch_size
    warmup: int
    steps: int
    arch_cap_s: float  # timed steps of one backbone stop after this many seconds
    loss_batch: tuple[int, int]
    loss_steps: int
    loss_cap_s: float
    depth_input: int | None  # None: the paper's encoders.depth.input_size
    image_hw: tuple[int, int]
    tile: tuple[int, int] | None  # (tile, overlap); None: the paper's model.tile, model.tile_overlap
    tiled_cap_s: float
    vlm_images: int
    tests_cap_s: float
    budget_s: float  # the whole run: a section that would start with less than MIN_SECTION_S left is skipped
    reserve_s: float  # the long sections (loss, throughput, tiled) leave this much for the ones after them


FULL = Plan(
    name="full",
    paper_sizes=True,
    crop=None,
    batch=None,
    warmup=5,
    steps=50,
    arch_cap_s=15.0,
    loss_batch=(1, 1),
    loss_steps=3,
    loss_cap_s=90.0,
    depth_input=None,
    image_hw=(4000, 6000),
    tile=None,
    tiled_cap_s=90.0,
    vlm_images=4,
    tests_cap_s=150.0,
    budget_s=430.0,  # gpu_check.sh kills the run at 470 s; the H200 is lent for 8 minutes
    reserve_s=60.0,
)
SMOKE = Plan(
    name="cpu-smoke",
    paper_sizes=False,
    crop=32,
    batch=(1, 1),
    warmup=1,
    steps=1,
    arch_cap_s=5.0,
    loss_batch=(1, 1),
    loss_steps=2,
    loss_cap_s=10.0,
    depth_input=28,
    image_hw=(96, 160),
    tile=(64, 8),
    tiled_cap_s=10.0,
    vlm_images=2,
    tests_cap_s=60.0,
    budget_s=300.0,
    reserve_s=0.0,
)


MIN_SECTION_S = 10.0

# ----------------------------------------------------------------------------------------------- helpers


def time_left(ctx: dict, reserve: bool = False) -> float:
    """Seconds left of the run's budget (minus the plan's reserve for the later sections when ``reserve``)."""
    return ctx["deadline"] - time.monotonic() - (ctx["plan"].reserve_s if reserve else 0.0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forbidden_loaded() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)


def paper_config(cache_dir: Path, plan: Plan):
    """The paper profile, with the loss terms that need CLIP (open_clip) off and the tiny Depth Anything."""
    from fairweather.contracts.config import load_config
    from fairweather.contracts.config.model import ModelConfig

    overrides = [
        f"runtime.model_cache_dir={cache_dir}",
        "encoders.depth.model_id=tiny:depth-anything",
        "loss.weights.wpl=0",
        "loss.weights.sem=0",
        "loss.weights.srd=0",
    ]
    if plan.depth_input is not None:
        overrides.append(f"encoders.depth.input_size={plan.depth_input}")
    cfg = load_config("paper", overrides)
    if not plan.paper_sizes:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(ModelConfig(), arch=cfg.model.arch))
    return cfg


def crop_of(cfg, plan: Plan) -> int:
    return plan.crop or cfg.train.crop_size


def build_net(model_cfg, clip, train_crop: int):
    """``build_model`` as the platform calls it (``train_crop_size`` sizes TLC where this version has it)."""
    from fairweather.models import build_model

    if "train_crop_size" in inspect.signature(build_model).parameters:
        return build_model(model_cfg, clip, train_crop_size=train_crop)
    return build_model(model_cfg, clip)


def make_batch(pairs: int, real: int, size: int, seed: int):
    """A seeded ``TrainBatch`` on CPU: smooth random images (noise alone is not an image), all with pseudo-labels."""
    from fairweather.training.step import TrainBatch

    gen = torch.Generator().manual_seed(seed)

    def images(n: int) -> torch.Tensor:
        coarse = torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=gen)
        smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        return (0.8 * smooth + 0.2 * torch.rand(n, 3, size, size, generator=gen)).clamp(0, 1)

    if not real:
        return TrainBatch(paired_input=images(pairs), paired_target=images(pairs))
    return TrainBatch(
        paired_input=images(pairs),
        paired_target=images(pairs),
        real_input=images(real),
        real_pseudo=images(real),
        real_has_pseudo=torch.ones(real, dtype=torch.bool),
    )


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for cuDNN convolutions and cuBLAS matmuls on or off inside the block (restored after)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


#: CLIP image towers for the ``clip_prior`` stand-in: open_clip's ViT-B/32 sizes, and tiny ones for the smoke run.
VIT_B_32 = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "image_size": 224, "patch_size": 32, "projection_dim": 512,
}  # fmt: skip
TINY_VIT = {
    "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 2,
    "image_size": 32, "patch_size": 8, "projection_dim": 32,
}  # fmt: skip


def clip_vision_stand_in(full: bool):
    """A frozen random CLIP ViT image tower built with transformers, for ``clip_prior`` where open_clip is missing.

    It offers what ``CLIPPriorNet`` reads (``encode_image_and_tokens``, ``embed_dim``, ``token_dim``,
    ``grid_size``) with open_clip's preprocessing; ViT-B/32 sizes when ``full`` (the same cost as the real one).
    """
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from fairweather.encoders.frozen import FrozenModule, normalize, resize_shortest_and_crop

    class TransformersCLIPVision(FrozenModule):
        def __init__(self, config: CLIPVisionConfig) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.model = CLIPVisionModelWithProjection(config)
            self.image_size = config.image_size
            grid = config.image_size // config.patch_size
            self.grid_size = (grid, grid)
            self.embed_dim = config.projection_dim
            self.token_dim = config.hidden_size
            self.register_buffer("mean", torch.tensor([0.48145466, 0.4578275, 0.40821073]), persistent=False)
            self.register_buffer("std", torch.tensor([0.26862954, 0.26130258, 0.27577711]), persistent=False)
            self.freeze()

        def encode_image_and_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pixels = normalize(resize_shortest_and_crop(x, self.image_size), self.mean, self.std)
            out = self.model(pixel_values=pixels.contiguous())
            return F.normalize(out.image_embeds, dim=-1), out.last_hidden_state[:, 1:]

    return TransformersCLIPVision(CLIPVisionConfig(**(VIT_B_32 if full else TINY_VIT)))


# ----------------------------------------------------------------------------------------------- sections


def all_archs() -> list[str]:
    """Every backbone ``fairweather.models.build_model`` knows (so a new one is benchmarked without edits here)."""
    from fairweather.models import BUILDERS

    return list(BUILDERS)


def section_env(ctx: dict) -> dict:
    import transformers

    import fairweather

    out: dict[str, Any] = {
        "fairweather": str(Path(fairweather.__file__).parent),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_default": {
            "cudnn": torch.backends.cudnn.allow_tf32,
            "matmul": torch.backends.cuda.matmul.allow_tf32,
        },
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(
            gpu_name=props.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_multiprocessors=props.multi_processor_count,
        )
        with contextlib.suppress(Exception):
            version = torch.cuda.nccl.version()
            out["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    return out


def section_vlm(ctx: dict) -> dict:
    from fairweather.contracts.config.vlm import VLMConfig
    from fairweather.tiny import resolve_model_ref
    from fairweather.vlm import build_backend, rate_images

    plan: Plan = ctx["plan"]
    start = time.perf_counter()
    path = resolve_model_ref("tiny:llava", ctx["cache_dir"])
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(plan.vlm_images)]
    cfg = VLMConfig(model_id="tiny:llava", dtype="float32", max_new_tokens=8)
    ratings = {}
    for device in ctx["devices"]:
        device_cfg = dataclasses.replace(cfg, device=device.type)
        ratings[device.type if device.type not in ratings else "cpu_again"] = rate_images(
            build_backend(device_cfg, path), images, device_cfg
        )
    (ref_name, ref), (got_name, got) = list(ratings.items())
    diffs = [abs(a.r_vlm - b.r_vlm) for a, b in zip(ref, got, strict=True)]
    prob_diffs = [
        max(abs(p - q) for p, q in zip(a.probs, b.probs, strict=True)) for a, b in zip(ref, got, strict=True)
    ]
    tolerance = 1e-3
    complete = all(r.complete for rs in ratings.values() for r in rs)
    return {
        "ok": complete and max(diffs) <= tolerance,
        "compared": [ref_name, got_name],
        "images": [list(image.shape) for image in images],
        "build_s": round(build_s, 2),
        "r_vlm": {name: [r.r_vlm for r in rs] for name, rs in ratings.items()},
        "max_abs_diff_r_vlm": max(diffs),
        "max_abs_diff_probs": max(prob_diffs),
        "tolerance": tolerance,
        "complete": complete,
    }


def _loss_run(
    cfg, device: torch.device, batch, steps: int, autocast: torch.dtype | None, cap_s: float
) -> list:
    """``steps`` real training steps on ``device`` (fewer if ``cap_s`` runs out after the first)."""
    from fairweather.training.optim import build_optimizer, build_scheduler
    from fairweather.training.setup import build_training_parts, memory_format
    from fairweather.training.step import train_step

    parts = build_training_parts(cfg, device)
    fmt = memory_format(cfg)
    model = parts.model.train()
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    on_device = batch.to(device, fmt)
    results, start = [], time.perf_counter()
    for step in range(steps):
        result = train_step(
            model, parts.loss, optimizer, on_device, step=step, grad_clip=cfg.train.grad_clip,
            autocast_dtype=autocast, scheduler=scheduler,
        )  # fmt: skip
        sync(device)
        results.append(
            {
                "loss": result.loss,
                "grad_norm": result.grad_norm,
                "terms": {
                    n: float(v)
                    for n, v, a in zip(parts.loss.names, result.terms, result.applied, strict=True)
                    if a
                },
                "s": round(time.perf_counter() - start, 3),
            }
        )
        if time.perf_counter() - start > cap_s:
            break
    return results


def section_loss(ctx: dict) -> dict:
    plan: Plan = ctx["plan"]
    cpu, device = ctx["devices"]
    cfg = paper_config(ctx["cache_dir"], plan)
    batch = make_batch(*plan.loss_batch, crop_of(cfg, plan), seed=1)
    rtol = 1e-3
    cap = max(1.0, min(plan.loss_cap_s, time_left(ctx, reserve=True) / 4))
    with tf32(False):
        reference = _loss_run(cfg, cpu, batch, plan.loss_steps, None, cap)
        steps = len(reference)
        strict = _loss_run(cfg, device, batch, steps, None, float("inf"))
    diffs = [rel_diff(a["loss"], b["loss"]) for a, b in zip(reference, strict, strict=True)]
    out: dict[str, Any] = {
        "ok": len(strict) == steps and max(diffs) <= rtol,
        "compared": [cpu.type, device.type],
        "arch": cfg.model.arch,
        "terms": [name for name, w in dataclasses.asdict(cfg.loss.weights).items() if w],
        "weights": dataclasses.asdict(cfg.loss.weights),
        "batch": {"pairs": plan.loss_batch[0], "real": plan.loss_batch[1], "crop": crop_of(cfg, plan)},
        "steps": steps,
        "rtol": rtol,
        "rel_diff_per_step": diffs,
        "cpu_fp32": reference,
        "device_fp32_no_tf32": strict,
    }
    if device.type == "cuda":
        # Information only: the GPU's defaults (TF32 convolutions) and the training precision (bf16 autocast).
        for name, allow, dtype in (
            ("device_fp32_tf32", True, None),
            ("device_bf16_autocast", True, torch.bfloat16),
        ):
            with tf32(allow):
                run = _loss_run(cfg, device, batch, steps, dtype, float("inf"))
            out[name] = run
            out[f"rel_diff_{name}"] = [
                rel_diff(a["loss"], b["loss"]) for a, b in zip(reference, run, strict=False)
            ]
    return out


def _throughput_one(arch: str, cfg, plan: Plan, device: torch.device, cap_s: float) -> dict:
    from fairweather.losses import build_composite_loss
    from fairweather.models import count_parameters
    from fairweather.training.optim import build_optimizer
    from fairweather.training.setup import memory_format
    from fairweather.training.step import freeze_unread_heads, train_step

    crop = crop_of(cfg, plan)
    pairs, real = plan.batch or (cfg.train.batch_size, cfg.train.real_batch_size)
    model_cfg = dataclasses.replace(cfg.model, arch=arch)
    clip = clip_vision_stand_in(plan.paper_sizes).to(device) if arch == "clip_prior" else None
    torch.manual_seed(0)
    fmt = memory_format(cfg)
    model = build_net(model_cfg, clip, crop).to(device).use_memory_format(fmt).train()
    weights = dataclasses.replace(cfg.loss.weights, wpl=0.0, sem=0.0, feat=0.0, srd=0.0)
    loss = build_composite_loss(dataclasses.replace(cfg.loss, weights=weights)).to(device)
    freeze_unread_heads(model, loss)
    optimizer = build_optimizer(model, cfg.train)
    batch = make_batch(pairs, real, crop, seed=2).to(device, fmt)
    autocast = torch.bfloat16 if device.type == "cuda" and cfg.train.bf16 else None

    def step(i: int) -> float:
        return train_step(
            model, loss, optimizer, batch, step=i, grad_clip=cfg.train.grad_clip, autocast_dtype=autocast
        ).loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(plan.warmup):
        step(i)
    sync(device)
    warmup_s = time.perf_counter() - start
    times, last = [], math.nan
    start = time.perf_counter()
    for i in range(plan.steps):
        last = step(plan.warmup + i)  # .loss is a host float: each step already waits for its GPU work
        sync(device)
        times.append(time.perf_counter() - start)
        if times[-1] > cap_s:
            break
    per_step = np.diff([0.0, *times])
    row = {
        "params_m": round(count_parameters(model) / 1e6, 3),
        "batch": {"pairs": pairs, "real": real, "crop": crop},
        "images_per_step": pairs + real,
        "warmup_steps": plan.warmup,
        "warmup_s": round(warmup_s, 3),
        "timed_steps": len(times),
        "images_per_s": (pairs + real) * len(times) / times[-1],
        "step_ms_median": float(np.median(per_step) * 1000),
        "step_ms_min": float(per_step.min() * 1000),
        "last_loss": last,
        "autocast": str(autocast) if autocast else None,
        "memory_format": str(fmt),
    }
    if arch == "clip_prior":
        row["clip"] = "random ViT-B/32 image tower (transformers) standing in for open_clip's"
    if device.type == "cuda":
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def section_throughput(ctx: dict) -> dict:
    plan: Plan = ctx["plan"]
    device = ctx["devices"][-1]
    cfg = paper_config(ctx["cache_dir"], plan)
    rows: dict[str, Any] = {}
    for index, arch in enumerate(ctx["archs"]):
        left = time_left(ctx, reserve=True)
        if left < MIN_SECTION_S:
            rows[arch] = {"error": f"skipped: {left:.0f} s of the run's budget left"}
            continue
        cap = max(1.0, min(plan.arch_cap_s, (left - MIN_SECTION_S) / (len(ctx["archs"]) - index)))
        try:
            rows[arch] = _throughput_one(arch, cfg, plan, device, cap)
        except Exception as error:  # one backbone's failure (OOM, ...) must not hide the others
            rows[arch] = {
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(limit=6),
            }
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"  throughput {arch}: {rows[arch].get('images_per_s', rows[arch].get('error'))}", flush=True)
    return {
        "ok": all("error" not in row for row in rows.values()),
        "loss_terms": ["sup", "ps"],
        "sizes": "paper" if plan.paper_sizes else "ModelConfig() defaults (tiny)",
        "backbones": rows,
    }


def section_tiled(ctx: dict) -> dict:
    from fairweather.models import restore_tiled
    from fairweather.models.tiling import tile_starts

    plan: Plan = ctx["plan"]
    device = ctx["devices"][-1]
    cfg = paper_config(ctx["cache_dir"], plan)
    tile, overlap = plan.tile or (cfg.model.tile, cfg.model.tile_overlap)
    height, width = plan.image_hw
    torch.manual_seed(0)
    model = build_net(cfg.model, None, crop_of(cfg, plan)).to(device).eval()
    tiles = len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))

    # A smooth 24-Mpx uint8 photo stand-in, made small and upscaled (fast), then as restore_image sees it.
    gen = torch.Generator().manual_seed(3)
    small = torch.rand(1, 3, max(2, height // 16), max(2, width // 16), generator=gen)
    image = (F.interpolate(small, size=(height, width), mode="bilinear") * 255).round().to(torch.uint8)

    with torch.no_grad():
        probe = torch.rand(1, 3, min(tile, height), min(tile, width), device=device)
        model(probe)  # warm-up (cuDNN plans, allocator)
        sync(device)
        start = time.perf_counter()
        model(probe)
        sync(device)
        per_tile = time.perf_counter() - start
        estimate = per_tile * tiles
        out: dict[str, Any] = {
            "arch": cfg.model.arch,
            "image_hw": [height, width],
            "megapixels": round(height * width / 1e6, 2),
            "tile": tile,
            "overlap": overlap,
            "tiles": tiles,
            "tile_forward_s": round(per_tile, 4),
        }
        cap = min(plan.tiled_cap_s, time_left(ctx, reserve=True))
        if estimate > cap:
            out.update(
                ok=False, error=f"skipped: {tiles} tiles x {per_tile:.3f} s ~ {estimate:.0f} s > {cap:.0f} s"
            )
            return out
        runs = [("fp32", None)]
        if device.type == "cuda":
            runs.append(("bf16_autocast", torch.bfloat16))
        for name, dtype in runs:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            x = (
                image.to(device).float() / 255
            ).contiguous()  # what restore_image's to_tensor + .to(device) give
            sync(device)
            ready = time.perf_counter()
            autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
            with autocast:
                restored = restore_tiled(model, x, tile, overlap)
            restored = restored.clamp(0, 1).float()
            sync(device)
            restored_at = time.perf_counter()
            host = restored.cpu()
            end = time.perf_counter()
            result = {
                "restore_s": round(restored_at - ready, 3),
                "end_to_end_s": round(end - start, 3),
                "megapixels_per_s": round(height * width / 1e6 / (restored_at - ready), 3),
                "finite": bool(torch.isfinite(host).all()),
                "mean_abs_change": float((host - image.float() / 255).abs().mean()),
            }
            if device.type == "cuda":
                result["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
            out[name] = result
            del x, restored, host
            if 2 * (time.perf_counter() - start) > min(plan.tiled_cap_s, time_left(ctx, reserve=True)):
                break  # no time for the bf16 run
    out["ok"] = out["fp32"]["finite"]
    return out


def section_ddp(ctx: dict) -> dict:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from fairweather.losses import build_composite_loss
    from fairweather.training.optim import build_optimizer
    from fairweather.training.step import reduce_step_terms, train_step

    plan: Plan = ctx["plan"]
    device = ctx["devices"][-1]
    backend = "nccl" if device.type == "cuda" else "gloo"
    cfg = paper_config(ctx["cache_dir"], plan)
    crop = crop_of(cfg, plan)
    # A file store, not a TCP port: a port found free and then bound can be taken in between by another process
    # (on a shared machine, a Ray starting its workers); one process needs no network rendezvous.
    dist.init_process_group(
        backend,
        init_method=f"file://{ctx['scratch']}/ddp-store",
        rank=0,
        world_size=1,
        timeout=datetime.timedelta(seconds=60),
    )
    ddp = None
    try:
        values = torch.arange(4, dtype=torch.float32, device=device)
        dist.all_reduce(values)
        sync(device)
        all_reduce_ok = values.cpu().tolist() == [0.0, 1.0, 2.0, 3.0]
        torch.manual_seed(0)
        model = build_net(cfg.model, None, crop).to(device).train()
        ddp = DistributedDataParallel(
            model, device_ids=[device.index or 0] if device.type == "cuda" else None
        )
        weights = dataclasses.replace(cfg.loss.weights, wpl=0.0, sem=0.0, feat=0.0, srd=0.0)
        loss = build_composite_loss(dataclasses.replace(cfg.loss, weights=weights)).to(device)
        optimizer = build_optimizer(ddp, cfg.train)
        batch = make_batch(2, 2, crop, seed=4).to(device)
        autocast = torch.bfloat16 if device.type == "cuda" else None
        result = train_step(
            ddp, loss, optimizer, batch, step=0, grad_clip=cfg.train.grad_clip, autocast_dtype=autocast
        )
        reduced = reduce_step_terms(result, loss.names)
    finally:
        # DDP's reducer holds the process group. Freed after destroy_process_group, it would be the last holder,
        # and the group's destructor joins gloo's threads with the GIL held while one of them may wait for the GIL
        # to free a tensor: a hang (seen here in CI). Freed first, the group outlives it.
        del ddp
        dist.destroy_process_group()
    return {
        "ok": all_reduce_ok and math.isfinite(result.loss) and bool(reduced),
        "backend": backend,
        "world_size": 1,
        "all_reduce_ok": all_reduce_ok,
        "arch": cfg.model.arch,
        "ddp_step_loss": result.loss,
        "reduce_step_terms": reduced,
    }


def section_gpu_tests(ctx: dict) -> dict:
    """``pytest -m gpu tests/test_gpu.py`` in a subprocess (the gpu-marked tests; vLLM's skips without vLLM).

    Without CUDA they would all skip, so the smoke run only collects them (their imports must work)."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    cuda = ctx["devices"][-1].type == "cuda"
    # Without the project's default options: they ask for pytest-xdist's workers, which a GPU machine may lack.
    cmd = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-m", "gpu", "-p", "no:cacheprovider"]
    cmd.append("tests/test_gpu.py")
    if not cuda:
        cmd.append("--collect-only")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(repo / "platform"), os.environ.get("PYTHONPATH")])),
    }
    try:
        done = subprocess.run(
            cmd,
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=max(5.0, min(ctx["plan"].tests_cap_s, time_left(ctx) - 20)),
        )
    except subprocess.TimeoutExpired as error:
        return {"ok": False, "error": f"timed out after {error.timeout} s", "command": " ".join(cmd[1:])}
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    return {
        "ok": done.returncode == 0,
        "error": None
        if done.returncode == 0
        else f"pytest exited {done.returncode}: {tail[-1] if tail else ''}",
        "command": " ".join(cmd[1:]),
        "collect_only": not cuda,
        "returncode": done.returncode,
        "output_tail": tail,
    }


RUNNERS: dict[str, Callable[[dict], dict]] = {
    "env": section_env,
    "vlm": section_vlm,
    "loss": section_loss,
    "throughput": section_throughput,
    "tiled": section_tiled,
    "ddp": section_ddp,
    "gpu_tests": section_gpu_tests,
}
assert set(RUNNERS) == set(SECTIONS)


# ----------------------------------------------------------------------------------------------- driver


def write_json(path: Path, report: dict) -> None:
    """Atomic rewrite, so a run killed mid-section still leaves a readable file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str, allow_nan=True) + "\n")
    os.replace(tmp, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="the JSON file to write")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="tiny sizes on CPU (the default without CUDA)"
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}"
    )
    parser.add_argument("--archs", default="", help="comma-separated backbones to time (default: all)")
    parser.add_argument(
        "--model-cache",
        type=Path,
        default=None,
        help="where tiny models are built (default: a temporary folder)",
    )
    parser.add_argument(
        "--plan", choices=("auto", "full", "smoke"), default="auto",
        help="sizes: auto = full on CUDA, smoke otherwise (full on CPU is for debugging the script: slow)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    args.archs = [a for a in args.archs.split(",") if a] or all_archs()
    unknown = [s for s in args.sections if s not in SECTIONS] + [
        a for a in args.archs if a not in all_archs()
    ]
    if unknown:
        parser.error(f"unknown sections / archs: {unknown}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    smoke = args.cpu_smoke or not torch.cuda.is_available()
    plan = {"auto": SMOKE if smoke else FULL, "full": FULL, "smoke": SMOKE}[args.plan]
    device = torch.device("cpu") if smoke else torch.device("cuda", 0)
    threads = torch.get_num_threads()
    if plan is SMOKE:
        # One intra-op thread: on a shared, loaded CPU (CI, other jobs) more threads than free cores make torch's
        # spinning OpenMP workers 10-50x slower; the smoke run checks that the code runs, not how fast.
        torch.set_num_threads(1)
    try:
        report = run(args, plan, device, argv)
    finally:
        torch.set_num_threads(threads)
    print(json.dumps(summary(report), indent=1), flush=True)
    return 0 if report["ok"] else 1


def run(args: argparse.Namespace, plan: Plan, device: torch.device, argv: list[str] | None) -> dict:
    """Every requested section in order, the JSON rewritten after each; returns the final report."""
    started = time.perf_counter()
    report: dict[str, Any] = {
        "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "mode": plan.name,
        "device": str(device),
        "plan": dataclasses.asdict(plan),
        "sections": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        cache_dir = args.model_cache or Path(tmp)
        ctx = {
            "plan": plan,
            "devices": (torch.device("cpu"), device),
            "cache_dir": cache_dir,
            "scratch": Path(tmp),
            "archs": args.archs,
            "deadline": time.monotonic() + plan.budget_s,
        }
        for name in args.sections:
            report["sections"][name] = {"status": "running"}
            write_json(args.out, report)
            print(f"[gpu_check] {name} ...", flush=True)
            start = time.perf_counter()
            try:
                left = time_left(ctx)
                if left < MIN_SECTION_S:
                    raise TimeoutError(
                        f"skipped: {left:.0f} s of the run's {plan.budget_s:.0f} s budget left"
                    )
                result = RUNNERS[name](ctx)
                result.setdefault("ok", True)
                result.setdefault("error", None)
            except Exception as error:
                result = {
                    "ok": False,
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc(),
                }
                print(result["traceback"], file=sys.stderr, flush=True)
            result["wall_s"] = round(time.perf_counter() - start, 2)
            result["status"] = "done"
            report["sections"][name] = result
            print(
                f"[gpu_check] {name}: ok={result['ok']} in {result['wall_s']} s {result['error'] or ''}",
                flush=True,
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
            report["forbidden_modules_loaded"] = forbidden_loaded()
            write_json(args.out, report)
    report["forbidden_modules_loaded"] = forbidden_loaded()
    report["ok"] = (
        all(s["ok"] for s in report["sections"].values()) and not report["forbidden_modules_loaded"]
    )
    report["total_wall_s"] = round(time.perf_counter() - started, 2)
    write_json(args.out, report)
    return report


def summary(report: dict) -> dict:
    """The headline numbers, printed at the end (the JSON has everything)."""
    sections = report["sections"]
    out: dict[str, Any] = {
        "ok": report["ok"],
        "mode": report["mode"],
        "total_wall_s": report["total_wall_s"],
        "forbidden_modules_loaded": report["forbidden_modules_loaded"],
        "sections": {
            name: {"ok": s["ok"], "wall_s": s["wall_s"], "error": s["error"]} for name, s in sections.items()
        },
    }
    if "throughput" in sections and "backbones" in sections["throughput"]:
        out["images_per_s"] = {
            arch: round(row["images_per_s"], 2) if "images_per_s" in row else row.get("error")
            for arch, row in sections["throughput"]["backbones"].items()
        }
    if sections.get("loss", {}).get("rel_diff_per_step"):
        out["loss_rel_diff"] = max(sections["loss"]["rel_diff_per_step"])
    if sections.get("vlm", {}).get("max_abs_diff_r_vlm") is not None:
        out["vlm_r_vlm_abs_diff"] = sections["vlm"]["max_abs_diff_r_vlm"]
    tiled = sections.get("tiled", {})
    if "fp32" in tiled:
        out["tiled_fp32"] = tiled["fp32"]
    return out


if __name__ == "__main__":
    sys.exit(main())
