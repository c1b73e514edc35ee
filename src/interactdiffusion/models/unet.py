"""A diffusers UNet with gated attention (the InFormer) and our grounding tokenizer as ``position_net``.

diffusers' ``UNet2DConditionModel(attention_type="gated")`` already inserts a
``GatedSelfAttentionDense`` fuser between self- and cross-attention of every transformer block and
calls ``position_net(**cross_attention_kwargs["gligen"])`` once per forward. We only swap the
``position_net`` and add the switches the framework needs (fusers on/off, adapter parameters).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import GatedSelfAttentionDense
from torch import nn

from .grounding import build_grounding
from .positional_fuser import set_visual_positions

# Stable Diffusion 1.x UNet shape (v1.4 and v1.5 share it), for tests and benchmarks without weights.
SD1_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

ADAPTER_PREFIX = "position_net."
FUSER_MARKER = ".fuser."


def is_adapter_key(key: str) -> bool:
    """True for the keys the interaction module adds to a UNet: fusers and ``position_net``."""
    return key.startswith(ADAPTER_PREFIX) or FUSER_MARKER in key


def build_grounded_unet(unet_config: dict[str, Any], grounding: dict[str, Any] | None = None) -> UNet2DConditionModel:
    """Build a UNet with gated blocks and install our grounding module as its ``position_net``.

    ``grounding`` holds ``kind`` (``interactdiffusion`` or ``gligen``) and the tokenizer's arguments;
    ``positive_len`` and ``out_dim`` default to the UNet's cross-attention width.
    """
    config = dict(unet_config)
    config["attention_type"] = "gated"
    unet = UNet2DConditionModel.from_config(config)
    install_grounding(unet, grounding)
    return unet


def install_grounding(unet: UNet2DConditionModel, grounding: dict[str, Any] | None = None) -> nn.Module:
    """Install the grounding module; ``visual_positions: true`` also makes the fusers positional
    (``positional_fuser.py``), recorded in the module's ``config`` so exports rebuild it."""
    grounding = dict(grounding or {})
    kind = grounding.pop("kind", "interactdiffusion")
    visual_positions = bool(grounding.pop("visual_positions", False))
    cross = unet.config.cross_attention_dim
    grounding.setdefault("positive_len", cross)
    grounding.setdefault("out_dim", cross)
    module = build_grounding(kind, **grounding)
    unet.position_net = module
    set_visual_positions(unet, visual_positions)
    if visual_positions:
        module.config = {**module.config, "visual_positions": True}
    return module


def fusers(unet: nn.Module) -> Iterator[GatedSelfAttentionDense]:
    for module in unet.modules():
        if isinstance(module, GatedSelfAttentionDense):
            yield module


def set_fusers_enabled(unet: nn.Module, enabled: bool) -> None:
    """Turn every fuser on or off (scheduled sampling); off gives exactly the plain UNet's output."""
    for fuser in fusers(unet):
        fuser.enabled = enabled


def adapter_named_parameters(unet: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    for name, param in unet.named_parameters():
        if is_adapter_key(name):
            yield name, param


def freeze_all_but_adapter(unet: nn.Module) -> int:
    """Freeze everything from Stable Diffusion; return the number of trainable parameters."""
    count = 0
    for name, param in unet.named_parameters():
        trainable = is_adapter_key(name)
        param.requires_grad_(trainable)
        if trainable:
            count += param.numel()
    return count


def adapter_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    """Only the interaction module's weights (fusers + position_net), in diffusers key names."""
    return {k: v for k, v in unet.state_dict().items() if is_adapter_key(k)}


def load_adapter_state_dict(unet: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> list[str]:
    """Load adapter weights; with ``strict`` every adapter key must be present with the right shape.

    Returns the adapter keys that were absent (only possible with ``strict=False``).
    """
    own = adapter_state_dict(unet)
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise KeyError(f"{len(unexpected)} keys are not adapter keys of this UNet, e.g. {unexpected[:3]}")
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape
    ]
    if mismatched:
        raise ValueError(
            "adapter weights do not fit this backbone (different UNet or tokenizer shape): "
            + "; ".join(mismatched[:3])
            + (f" (+{len(mismatched) - 3} more)" if len(mismatched) > 3 else "")
        )
    missing = sorted(set(own) - set(state))
    if missing and strict:
        raise KeyError(f"{len(missing)} adapter keys are missing, e.g. {missing[:3]}")
    unet.load_state_dict(state, strict=False)
    return missing
