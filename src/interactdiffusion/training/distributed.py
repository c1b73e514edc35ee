"""Sharing a callback's work over the ranks of a DDP run.

A callback that generated on rank 0 alone kept every other rank waiting in the next collective for the
whole generation: with a large ``num_layouts`` that wait can outlast the process group's timeout. Here
each rank takes every ``world_size``-th item, and the results meet on rank 0, so every rank works for
about the same time and waits only for the slowest share. Items are generated from per-item seeds
(``Scene.seed_for``), so the images do not depend on how the work was split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch.distributed as dist
from lightning import Trainer

T = TypeVar("T")


def rank_share(trainer: Trainer, count: int) -> list[int]:
    """The item indices this rank handles: ``rank, rank + world, ...``."""
    return list(range(trainer.global_rank, count, max(1, trainer.world_size)))


def gather_to_rank_zero(trainer: Trainer, value: Any) -> list[Any] | None:
    """Every rank's ``value`` on rank 0 (in rank order); None on the other ranks."""
    if trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] | None = [None] * trainer.world_size if trainer.is_global_zero else None
    dist.gather_object(value, out, dst=0)
    return out


def reassemble(count: int, shares: Sequence[tuple[Sequence[int], Sequence[T]]]) -> list[T]:
    """The items of all ranks in their original order, from (indices, results) per rank."""
    out: list[Any] = [None] * count
    for indices, results in shares:
        for index, result in zip(indices, results):
            out[index] = result
    missing = [k for k, item in enumerate(out) if item is None]
    if missing:
        raise RuntimeError(f"{len(missing)} of {count} items came back from no rank (e.g. #{missing[0]})")
    return out


def share_errors(trainer: Trainer, error: BaseException | None) -> None:
    """Raise on every rank when any rank failed (after all of them reached this point)."""
    message = f"{type(error).__name__}: {error}" if error is not None else None
    if trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        failures = [message]
    else:
        failures = [None] * trainer.world_size
        dist.all_gather_object(failures, message)
    if error is not None:
        raise error
    failed = [(rank, text) for rank, text in enumerate(failures) if text]
    if failed:
        rank, text = failed[0]
        raise RuntimeError(f"rank {rank} failed: {text}")
