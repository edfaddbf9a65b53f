"""One training step of the restoration network: one forward over both domains, the composite loss, one backward.

Why one forward: the paired and the real batch are concatenated and restored together, then split. Two forwards
before one backward is what DDP handles badly (its reducer expects one forward per backward), and one larger batch
is also the cheaper one on a GPU. Why the anchor (see :func:`_anchor`): under DDP every rank must produce a
gradient for every trained parameter each step, even when no term applied to its batch, or the other ranks wait
in the all-reduce forever.

A non-finite term or total stops the step *before* ``optimizer.step()``: the backward still runs (so the ranks of a
DDP job stay in step with each other's all-reduce), the poisoned gradients are dropped, and
:class:`NonFiniteLossError` names the term(s) and the step. A NaN on another rank reaches this rank through the
averaged gradients; the gradient-norm check catches that case with the same error. After ``optimizer.step()`` the
weights are checked too (one fused norm over every trained tensor, one host sync): a learning rate that makes them
overflow (1e30) stops the run with :class:`NonFiniteError` at that step, before any checkpoint of it is written,
instead of feeding inf weights to the next forward, the EMA teacher and the validation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch
import torch.distributed as dist
from torch import nn

from fairweather.contracts.errors import FairweatherError
from fairweather.losses import CompositeLoss, LossContext
from fairweather.models import RestorationNet
from fairweather.models.conditioning import condition_tensor

from .ema import unwrap


@dataclass
class TrainBatch:
    """One step's images. All images share one crop size ``(h, w)`` so both domains go through one forward."""

    paired_input: torch.Tensor  # (Np, 3, h, w) float in [0, 1]
    paired_target: torch.Tensor  # (Np, 3, h, w)
    real_input: torch.Tensor | None = None  # (Nr, 3, h, w)
    real_pseudo: torch.Tensor | None = None  # (Nr, 3, h, w); rows without a pseudo-label hold anything
    real_has_pseudo: torch.Tensor | None = None  # (Nr,) bool
    d_pos: list[str] | None = None  # Nr clear-weather descriptions
    d_neg: list[str] | None = None  # Nr original descriptions
    #: The weathers a weather-conditioned network is told (Np and Nr words; None: unknown).
    paired_weather: list[str] | None = None
    real_weather: list[str] | None = None

    def to(
        self, device: torch.device | str, memory_format: torch.memory_format = torch.contiguous_format
    ) -> TrainBatch:
        """A copy with every tensor on ``device`` (images in ``memory_format``, e.g. channels-last on CUDA)."""

        def move(value: object) -> object:
            if not isinstance(value, torch.Tensor):
                return value
            if value.ndim == 4:
                return value.to(device, non_blocking=True, memory_format=memory_format)
            return value.to(device, non_blocking=True)

        return TrainBatch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    @property
    def num_real(self) -> int:
        return 0 if self.real_input is None else int(self.real_input.shape[0])

    def condition(self) -> torch.Tensor:
        """``(Np + Nr,)`` int64 weather conditions of the joint forward, paired rows first (unknown where the
        batch names no weather), on the CPU: the network's forward moves them to the images' device."""
        paired = self.paired_weather or [None] * self.paired_input.shape[0]
        real = self.real_weather or [None] * self.num_real
        return condition_tensor([*paired, *real])


@dataclass
class StepResult:
    """What one rank's step measured, for logging (reduce across ranks with :func:`reduce_step_terms`)."""

    loss: float  # weighted total of this rank's batch
    terms: (
        torch.Tensor
    )  # (T,) float64 on CPU: unweighted value of each term, in loss.names order; 0 if not applied
    applied: torch.Tensor  # (T,) bool
    grad_norm: float  # before clipping


class NonFiniteError(FairweatherError, RuntimeError):
    """Training diverged: a loss, the gradient or the weights became NaN/inf. The message names the step; nothing
    of that step may be saved (the last good checkpoint stays the latest), and a rerun with the same settings fails
    the same way."""


class NonFiniteLossError(NonFiniteError):
    """A loss term, the total or the gradient became NaN/inf; raised before the optimizer could apply it."""


def freeze_unread_heads(model: nn.Module, loss: CompositeLoss) -> None:
    """Freeze the network's side-output heads when no term of ``loss`` reads them (``RestorationNet.aux_heads``).

    Call once on the bare network, before wrapping it in DDP and building the optimiser: a head that no loss reads
    gets no gradient, which DDP does not allow.
    """
    net = unwrap(model)
    if isinstance(net, RestorationNet) and not loss.needs_aux:
        net.freeze_aux_heads()


def _contexts(batch: TrainBatch, restored: torch.Tensor, aux: dict[str, torch.Tensor]) -> list[LossContext]:
    """Split the joint output back into one context per domain (the paired rows come first)."""
    n = batch.paired_input.shape[0]
    contexts = [
        LossContext(
            restored=restored[:n],
            degraded=batch.paired_input,
            domain="paired",
            target=batch.paired_target,
            aux={key: value[:n] for key, value in aux.items()},
        )
    ]
    if batch.num_real:
        contexts.append(
            LossContext(
                restored=restored[n:],
                degraded=batch.real_input,
                domain="real",
                pseudo_label=batch.real_pseudo,
                has_pseudo=batch.real_has_pseudo,
                d_pos=batch.d_pos,
                d_neg=batch.d_neg,
                aux={key: value[n:] for key, value in aux.items()},
            )
        )
    return contexts


def _anchor(restored: torch.Tensor, aux: dict[str, torch.Tensor]) -> torch.Tensor:
    """A zero that depends on every network output: added to the total, it gives every parameter that produced an
    output a (zero) gradient even when no term used that output on this rank's batch."""
    return sum(output.float().sum() for output in (restored, *aux.values())) * 0.0


def _grad_norm(parameters: Sequence[torch.Tensor], grad_clip: float | None) -> torch.Tensor:
    """Total L2 norm of the gradients before clipping; clips them in place to ``grad_clip`` when given (> 0)."""
    if grad_clip:
        return torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    return torch.nn.utils.get_total_norm([p.grad for p in parameters])


def train_step(
    model: nn.Module,
    loss: CompositeLoss,
    optimizer: torch.optim.Optimizer,
    batch: TrainBatch,
    *,
    step: int,
    grad_clip: float | None = None,
    autocast_dtype: torch.dtype | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> StepResult:
    """Forward both domains at once, one backward, check, clip, ``optimizer.step()``, ``scheduler.step()``.

    Args:
        model: the restoration network, bare or DDP-wrapped, in training mode (the caller sets the mode).
        loss: the composite loss; ``loss.needs_aux`` decides whether the network returns its side outputs.
        batch: on the model's device already (:meth:`TrainBatch.to`).
        step: the step's number, for error messages.
        grad_clip: max gradient L2 norm; None or 0 does not clip.
        autocast_dtype: e.g. ``torch.bfloat16``: forward and loss under ``torch.autocast`` of the inputs' device
            type (on CPU this works too, slowly; the term values and the total are reduced in float32).
    Raises:
        NonFiniteLossError: a term, the total or the gradient norm is NaN/inf; the parameters are unchanged and
            the gradients cleared.
        NonFiniteError: the optimizer step overflowed or left a weight NaN/inf (the weights are spoiled: stop).
    """
    inputs = batch.paired_input if not batch.num_real else torch.cat([batch.paired_input, batch.real_input])
    autocast = (
        torch.autocast(inputs.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else nullcontext()
    )
    with autocast:
        output = model(inputs, return_aux=loss.needs_aux, weather=batch.condition())
        restored, aux = output if loss.needs_aux else (output, {})
        total, values, applied = loss(*_contexts(batch, restored, aux))
        total = total + _anchor(restored, aux)
    total.backward()
    grad_norm = _grad_norm([p for p in model.parameters() if p.grad is not None], grad_clip)

    # One device-to-host copy for everything the checks and the log need.
    report = torch.cat([values, total.detach().float()[None], grad_norm.float()[None]]).to(
        "cpu", torch.float64
    )
    terms, total_value, norm_value = report[:-2], float(report[-2]), float(report[-1])
    applied = applied.cpu()
    problem = _non_finite(loss.names, terms, applied, total_value, norm_value)
    if problem:
        # Nobody may step with these gradients, not even a caller that catches the error.
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(f"{problem} at step {step}; the optimizer step was skipped")
    lr = optimizer.param_groups[0]["lr"]
    try:
        optimizer.step()
    except RuntimeError as err:  # Adam's step size past float32's range (lr 3e38): "... without overflow"
        if "overflow" not in str(err):
            raise
        raise NonFiniteError(
            f"the optimizer step overflowed at step {step} (learning rate {lr:g}): lower train.lr"
        ) from None
    _check_weights(model, step, lr)
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss=total_value, terms=terms, applied=applied, grad_norm=norm_value)


def _check_weights(model: nn.Module, step: int, lr: float) -> None:
    """Raise :class:`NonFiniteError` when a trained weight is NaN/inf or so large that the norm overflows.

    One fused norm per tensor (``torch._foreach_norm``) summed on the device and one host sync per step: a NaN or
    inf anywhere makes the sum non-finite, and so do weights past ~1e19 whose squares overflow float32 (such a
    network's next forward overflows anyway).
    """
    params = [p.detach() for p in model.parameters() if p.requires_grad]
    if not params:
        return
    total = torch.stack([norm.float() for norm in torch._foreach_norm(params)]).sum()
    if not torch.isfinite(total):
        raise NonFiniteError(
            f"the weights became non-finite after the optimizer step at step {step} (their norm is "
            f"{float(total)}, learning rate {lr:g}): lower train.lr"
        )


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _non_finite(
    names: list[str], terms: torch.Tensor, applied: torch.Tensor, total: float, grad_norm: float
) -> str | None:
    """What went NaN/inf, in words, or None."""
    bad = [
        f"{name}={float(value)}"
        for name, value, on in zip(names, terms, applied, strict=True)
        if on and not math.isfinite(value)
    ]
    if bad:
        return f"loss term(s) {', '.join(bad)} became non-finite"
    if not math.isfinite(total):
        return f"the total loss became {total}"
    if not math.isfinite(grad_norm):
        if _world_size() > 1:
            return f"the gradient norm became {grad_norm} (a non-finite loss on another rank reaches every rank's gradients)"
        return f"the gradient norm became {grad_norm} although every loss term is finite"
    return None


def reduce_step_terms(
    results: StepResult | list[StepResult], names: list[str], group: dist.ProcessGroup | None = None
) -> dict[str, float]:
    """Mean value of each term over the ranks and steps where it applied; terms applied nowhere are omitted.

    Sums and counts are all-reduced over ``group`` when ``torch.distributed`` is initialised (every rank must call
    this, with the same ``names``), else averaged locally. Every (rank, step) where a term applied weighs the same.
    """
    results = [results] if isinstance(results, StepResult) else list(results)
    for result in results:
        if result.terms.shape != (len(names),):
            raise ValueError(
                f"a step result has {tuple(result.terms.shape)} term values for {len(names)} names"
            )
    terms = (
        torch.stack([r.terms for r in results])
        if results
        else torch.zeros(0, len(names), dtype=torch.float64)
    )
    applied = (
        torch.stack([r.applied for r in results]) if results else torch.zeros(0, len(names), dtype=torch.bool)
    )
    totals = torch.stack([(terms * applied).sum(0), applied.sum(0).to(torch.float64)])  # (2, T): sums, counts
    if dist.is_available() and dist.is_initialized():
        # NCCL reduces only CUDA tensors; gloo takes CPU ones.
        device = (
            torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else "cpu"
        )
        totals = totals.to(device)
        dist.all_reduce(totals, op=dist.ReduceOp.SUM, group=group)
        totals = totals.cpu()
    sums, counts = totals
    return {name: float(sums[i] / counts[i]) for i, name in enumerate(names) if counts[i] > 0}
