"""FSDP and the fusers' 0-dim gates: keep ``alpha_attn``/``alpha_dense`` out of sharding, average their grads.

PyTorch FSDP (both ``FullyShardedDataParallel`` and ``fully_shard``) refuses scalar parameters ("Change
fuser.alpha_attn to a 1D tensor"), but the official key layout has them 0-dim. So under ``trainer=fsdp``
the gates are FSDP's ``ignored_states``: replicated on every rank (2 x 70 numbers at SDXL size) and their
gradients all-reduced here before each optimiser step, which is what DDP would have done for them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def scalar_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.dim() == 0]


def is_fsdp(strategy) -> bool:
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(strategy, FSDPStrategy)


def exclude_scalars_from_fsdp(strategy, module: nn.Module) -> int:
    """Register ``module``'s 0-dim parameters as FSDP ``ignored_states``; returns how many."""
    if not is_fsdp(strategy):
        return 0
    scalars = scalar_parameters(module)
    ignored = list(strategy.kwargs.get("ignored_states") or [])
    strategy.kwargs["ignored_states"] = ignored + [p for p in scalars if all(p is not q for q in ignored)]
    return len(scalars)


def average_scalar_grads(strategy, module: nn.Module) -> None:
    """All-reduce (mean) the gradients FSDP does not reduce: those of the ignored scalar parameters."""
    if not is_fsdp(strategy) or not dist.is_available() or not dist.is_initialized():
        return
    grads = [p.grad for p in scalar_parameters(module) if p.requires_grad and p.grad is not None]
    if not grads:
        return
    flat = torch.stack(grads)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for grad, value in zip(grads, flat):
        grad.copy_(value)
