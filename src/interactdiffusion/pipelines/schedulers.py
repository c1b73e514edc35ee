"""Samplers by preset name and precisions by name, on a backbone's noise schedule."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}

# Named presets; any other diffusers scheduler class name works too (e.g. "HeunDiscreteScheduler").
SCHEDULER_PRESETS: dict[str, tuple[type, dict[str, Any]]] = {
    "plms": (PNDMScheduler, {"skip_prk_steps": True}),  # the paper's sampler
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
}


def resolve_dtype(precision: str | torch.dtype | None) -> torch.dtype | None:
    """``fp32`` / ``fp16`` / ``bf16`` (or a torch dtype) → torch dtype; ``None`` stays ``None``."""
    if precision is None or isinstance(precision, torch.dtype):
        return precision
    key = str(precision).lower().replace("-mixed", "").replace("-true", "")
    if key not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use fp32, fp16 or bf16")
    return PRECISIONS[key]


def make_scheduler(
    scheduler: str | SchedulerMixin, base_config: dict[str, Any] | None = None, **overrides
) -> SchedulerMixin:
    """A scheduler by preset name (``plms``, ``ddim``, ...) or diffusers class name, on ``base_config``.

    ``base_config`` is the backbone's noise schedule (betas, timesteps); the preset adds its own switches
    (PLMS = ``PNDMScheduler(skip_prk_steps=True)``) and ``overrides`` win over both.
    """
    if isinstance(scheduler, SchedulerMixin):
        if overrides:
            return type(scheduler).from_config({**scheduler.config, **overrides})
        return scheduler
    name = str(scheduler)
    if name.lower() in SCHEDULER_PRESETS:
        cls, preset = SCHEDULER_PRESETS[name.lower()]
    else:
        import diffusers

        cls = getattr(diffusers, name, None)
        if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
            raise ValueError(
                f"unknown scheduler {name!r}: use one of {sorted(SCHEDULER_PRESETS)} or a diffusers scheduler "
                "class name such as 'DDIMScheduler'"
            )
        preset = {}
    config = {k: v for k, v in dict(base_config or {}).items() if not k.startswith("_")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_config({**config, **preset, **overrides})
