"""The adapter's optimiser: AdamW, or bitsandbytes' 8-bit AdamW where the device supports it.

The official XL trainer offers ``--use_8bit_adam``: at SDXL size the adapter has 1.8e9 parameters, so
AdamW's two fp32 moments take 14.5 GB; 8-bit moments take a quarter of that.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

OPTIMIZERS = ("adamw", "adamw_8bit")
GATE_NAMES = ("alpha_attn", "alpha_dense")


def optimizer_param_groups(named_params: Iterable[tuple[str, torch.nn.Parameter]], lr: float,
                           gate_lr_scale: float = 1.0) -> list:
    """The parameters, with the fusers' scalar gates in a group of their own when their rate differs.

    A gate starts at 0 and AdamW moves a scalar by about ``lr`` per step, so at ``lr`` 1e-3 a gate needs
    hundreds of consistent steps to open while the attention weights behind it are already learning:
    ``gate_lr_scale`` lets the gates keep up. At 1 the plain list is returned (one group), so checkpoints
    written before the option existed resume unchanged.
    """
    named_params = list(named_params)
    if gate_lr_scale == 1.0:
        return [p for _, p in named_params]
    gates = [p for n, p in named_params if n.rsplit(".", 1)[-1] in GATE_NAMES]
    others = [p for n, p in named_params if n.rsplit(".", 1)[-1] not in GATE_NAMES]
    if not gates:
        raise ValueError("recipe.gate_lr_scale is set, but no trainable fuser gate (alpha_attn, alpha_dense) was found")
    return [{"params": others}, {"params": gates, "lr": lr * gate_lr_scale}]


def build_optimizer(params: Iterable, name: str, lr: float, betas: tuple[float, float],
                    eps: float, weight_decay: float) -> torch.optim.Optimizer:
    """``adamw`` (torch) or ``adamw_8bit`` (``bitsandbytes.optim.AdamW8bit``, CUDA parameters only).

    ``params``: parameters or param-group dicts (``optimizer_param_groups``).
    """
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
    tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    devices = {p.device.type for p in tensors}
    if devices != {"cuda"}:
        raise ValueError(f"recipe.optimizer=adamw_8bit needs the adapter on a CUDA GPU; it is on {sorted(devices)}")
    return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
