"""The learning-rate schedule of the paper: linear warm-up, then constant."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupConstant:
    """Factor ``min(1, (step + 1) / warmup_steps)``: full LR is reached at optimiser step ``warmup_steps``.

    A class rather than a lambda so the scheduler pickles (checkpoints, spawn-based launchers).
    """

    def __init__(self, warmup_steps: int):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, (step + 1) / self.warmup_steps)


def warmup_constant_schedule(optimizer: Optimizer, warmup_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, WarmupConstant(warmup_steps))
