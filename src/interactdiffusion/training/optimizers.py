"""The adapter's optimiser: AdamW, or bitsandbytes' 8-bit AdamW where the device supports it.

The official XL trainer offers ``--use_8bit_adam``: at SDXL size the adapter has 1.8e9 parameters, so
AdamW's two fp32 moments take 14.5 GB; 8-bit moments take a quarter of that.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

OPTIMIZERS = ("adamw", "adamw_8bit")


def build_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, betas: tuple[float, float],
                    eps: float, weight_decay: float) -> torch.optim.Optimizer:
    """``adamw`` (torch) or ``adamw_8bit`` (``bitsandbytes.optim.AdamW8bit``, CUDA parameters only)."""
    params = list(params)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if name != "adamw_8bit":
        raise ValueError(f"recipe.optimizer must be one of {OPTIMIZERS}, got {name!r}")
    try:
        import bitsandbytes as bnb
    except ImportError as error:
        raise ImportError(
            "recipe.optimizer=adamw_8bit needs bitsandbytes (pip install 'interactdiffusion[xl]'); "
            f"it is not importable here ({error})"
        ) from None
    devices = {p.device.type for p in params}
    if devices != {"cuda"}:
        raise ValueError(f"recipe.optimizer=adamw_8bit needs the adapter on a CUDA GPU; it is on {sorted(devices)}")
    return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
