"""The training step under real DDP: ``torch.distributed`` on gloo, world size 2, two spawned processes, no Ray.

Every backbone with each loss term switched off in turn must run at least two steps: an unused parameter shows up
as "Expected to have finished reduction in the prior iteration" at the second forward. The ranks' batches differ
on purpose (rank 1 has no pseudo-label at step 0), so terms apply on one rank and not the other.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fairweather.contracts.config.loss import LossConfig, LossWeights
from fairweather.contracts.config.model import ModelConfig
from fairweather.training.step import StepResult, reduce_step_terms

BACKBONES = ("msbdn", "restormer", "nafnet", "promptir")
TERMS = ("sup", "ps", "wpl", "sem", "feat", "srd")

#: (arch, term switched off or None); every term that can act is on otherwise (srd only with clip_prior).
FULL_MATRIX = [(arch, off) for arch in BACKBONES for off in (None, *TERMS[:-1])] + [
    ("clip_prior", off) for off in (None, *TERMS)
]
#: The default run: every backbone once, and the CLIP-prior net without its SRD term (the reported DDP failure).
REPRESENTATIVE = [(arch, None) for arch in BACKBONES] + [("clip_prior", None), ("clip_prior", "srd")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker, *args) -> None:
    """Run ``worker(rank, port, *args)`` on 2 gloo ranks; a failure on either rank fails the test."""
    mp.spawn(worker, args=(free_port(), *args), nprocs=2, join=True)


def init_rank(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # A short timeout: a rank left waiting in an all-reduce fails the test instead of hanging it.
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=120))
    torch.set_num_threads(1)  # two ranks on a 2-core machine


def loss_config(arch: str, off: str | None) -> LossConfig:
    on = {term: 1.0 for term in TERMS if term != "srd" or arch == "clip_prior"}
    on.pop(off, None)
    zero = {term: 0.0 for term in TERMS}
    return LossConfig(weights=LossWeights(**{**zero, **on}))


def rank_batch(rank: int, step: int, size: int = 16):
    """Batch 1 per domain; rank 1 has no pseudo-label at step 0, so ``ps`` applies on rank 0 only there."""
    from fairweather.training.step import TrainBatch

    gen = torch.Generator().manual_seed(100 * rank + step)
    image = lambda: torch.rand(1, 3, size, size, generator=gen)  # noqa: E731
    return TrainBatch(
        paired_input=image(),
        paired_target=image(),
        real_input=image(),
        real_pseudo=image(),
        real_has_pseudo=torch.tensor([not (rank == 1 and step == 0)]),
        d_pos=[f"clear scene {rank}"],
        d_neg=[f"rainy scene {rank}"],
    )


def ddp_worker(rank: int, port: int, cache: str, cases: list, out: str) -> None:
    init_rank(rank, port)
    from torch.nn.parallel import DistributedDataParallel

    from fairweather.contracts.config.encoders import CLIPEncoderConfig, DepthEncoderConfig
    from fairweather.encoders import FrozenCLIP, FrozenDepthEncoder
    from fairweather.losses import WeatherPrompts, build_composite_loss
    from fairweather.models import build_model
    from fairweather.training.ema import build_teacher, ema_update
    from fairweather.training.step import freeze_unread_heads, train_step

    clip = FrozenCLIP.from_config(CLIPEncoderConfig(model_name="tiny:clip"), cache)
    depth = FrozenDepthEncoder.from_config(
        DepthEncoderConfig(model_id="tiny:depth-anything", input_size=28), cache
    )
    torch.manual_seed(0)
    prompts = WeatherPrompts(clip, context_len=2).freeze()
    report = {}
    for arch, off in cases:
        torch.manual_seed(0)
        model_cfg = ModelConfig(arch=arch)
        net = build_model(model_cfg, clip).train()
        loss = build_composite_loss(loss_config(arch, off), clip=clip, depth=depth, prompts=prompts)
        freeze_unread_heads(net, loss)
        model = DistributedDataParallel(
            net
        )  # find_unused_parameters=False: every trained parameter must get a grad
        teacher = build_teacher(model_cfg, model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        results = []
        for step in range(2):
            results.append(
                train_step(model, loss, optimizer, rank_batch(rank, step), step=step, grad_clip=1.0)
            )
            ema_update(teacher, model, 0.9)
        checksum = torch.stack([p.detach().double().sum() for p in net.parameters()]).sum()
        report[f"{arch}-{off}"] = {
            "names": loss.names,
            "reduced": reduce_step_terms(results, loss.names),
            "applied": [r.applied.tolist() for r in results],
            "checksum": float(checksum),
            "teacher_shares_clip": getattr(teacher, "clip", clip) is clip,
        }
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    del model  # before the group: see benchmarks/gpu_check.py's section_ddp (the reducer must not outlive it)
    dist.destroy_process_group()


def run_cases(cases: list, model_cache: Path, tmp_path: Path, clip, depth) -> None:
    """``clip`` / ``depth``: the session fixtures, requested so the tiny models exist in the cache before the ranks
    load them (two ranks building the same folder at once would race)."""
    spawn(ddp_worker, str(model_cache), cases, str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for arch, off in cases:
        key = f"{arch}-{off}"
        zero, one = ranks[0][key], ranks[1][key]
        assert zero["names"] == one["names"] and off not in zero["names"], key
        assert zero["checksum"] == pytest.approx(one["checksum"], rel=1e-6), key  # the ranks stayed in sync
        assert zero["reduced"] == one["reduced"] and set(zero["reduced"]) == set(zero["names"]), key
        assert zero["teacher_shares_clip"], key
        if "ps" in zero["names"]:
            ps = zero["names"].index("ps")
            assert zero["applied"][0][ps] and not one["applied"][0][ps], (
                key
            )  # ps applied on rank 0 only at step 0


def test_ddp_step_every_backbone(model_cache: Path, tmp_path: Path, clip, depth) -> None:
    run_cases(REPRESENTATIVE, model_cache, tmp_path, clip, depth)


@pytest.mark.slow
def test_ddp_step_every_backbone_with_each_term_off(model_cache: Path, tmp_path: Path, clip, depth) -> None:
    run_cases(FULL_MATRIX, model_cache, tmp_path, clip, depth)


def reduce_worker(rank: int, port: int, out: str) -> None:
    init_rank(rank, port)
    names = ["sup", "ps", "sem"]

    def result(values: list[float], applied: list[bool]) -> StepResult:
        return StepResult(1.0, torch.tensor(values, dtype=torch.float64), torch.tensor(applied), 0.0)

    if rank == 0:
        steps = [result([1.0, 2.0, 0.0], [True, True, False])]
    else:
        steps = [result([3.0, 0.0, 0.0], [True, False, False]), result([5.0, 4.0, 0.0], [True, True, False])]
    reduced = reduce_step_terms(steps, names)
    single = reduce_step_terms(steps[0], names)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"reduced": reduced, "single": single}))
    dist.destroy_process_group()


def test_reduce_step_terms_across_ranks_with_different_masks(tmp_path: Path) -> None:
    spawn(reduce_worker, str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        # sup: (1 + 3 + 5) / 3; ps: (2 + 4) / 2 (applied on two of three steps); sem: applied nowhere, omitted.
        assert rank["reduced"] == pytest.approx({"sup": 3.0, "ps": 3.0})
        # One step per rank: sup (1 + 3) / 2, ps only on rank 0.
        assert rank["single"] == pytest.approx({"sup": 2.0, "ps": 2.0})


def test_reduce_step_terms_locally_without_a_process_group() -> None:
    steps = [
        StepResult(1.0, torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([True, False]), 0.0),
        StepResult(1.0, torch.tensor([3.0, 6.0], dtype=torch.float64), torch.tensor([True, True]), 0.0),
    ]
    assert reduce_step_terms(steps, ["sup", "ps"]) == {"sup": 2.0, "ps": 6.0}
    with pytest.raises(ValueError, match="3 names"):
        reduce_step_terms(steps, ["sup", "ps", "sem"])
