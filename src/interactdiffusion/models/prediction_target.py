"""What a UNet is trained to predict from a noised latent, as its scheduler's ``prediction_type`` says."""

from __future__ import annotations

import torch


def prediction_target(
    kind: str, latents: torch.Tensor, noise: torch.Tensor, a: torch.Tensor, s: torch.Tensor
) -> torch.Tensor:
    """The noise (``epsilon``, SD 1.x) or ``v = a * noise - s * latents`` (``v_prediction``, SD 2.x), where the
    noised latent is ``a * latents + s * noise`` (``a = sqrt(alpha_bar_t)``, ``s = sqrt(1 - alpha_bar_t)``)."""
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return a * noise - s * latents
    raise ValueError(f"unsupported prediction_type {kind!r} in the backbone's scheduler config")
