"""Shared fixtures: tiny models built from configs, small threads so the suite fits 2 cores."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One thread: the tiny test models are dominated by per-op overhead, which threads only add to.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_backbone():
    """One tiny backbone per session (random weights, real CLIP tokenizer). Do not mutate it."""
    from interactdiffusion.models.backbone import build_tiny_backbone

    return build_tiny_backbone(seed=0)


@pytest.fixture(scope="session")
def sd1_unet():
    """The grounded UNet at SD-1.x shape (random weights; ~12 s to build on CPU, built once)."""
    from interactdiffusion.models.unet import SD1_UNET_CONFIG, build_grounded_unet

    torch.manual_seed(0)
    return build_grounded_unet(SD1_UNET_CONFIG)
