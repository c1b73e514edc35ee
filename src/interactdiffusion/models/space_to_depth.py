"""A lossless, weightless stand-in for the VAE: pixels folded into channels (space-to-depth).

Stable Diffusion compresses 512² images 8× with a learned VAE so the UNet works on a 64² grid. A
32×32 HOI-Shapes image needs no perceptual compression, only a smaller grid: folding each f×f patch
into f²·3 channels gives the UNet an (32/f)² grid at no loss at all, nothing to train and nothing
that can blur a 4-pixel verb bar. It speaks the ``AutoencoderKL`` interface the framework uses
(``encode(x).latent_dist``, ``decode(z).sample``, ``config.scaling_factor``), saves and loads as a
diffusers model folder, and is picked by ``_class_name`` in ``vae/config.json`` (``load_autoencoder``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin


class SpaceToDepthAutoencoder(ModelMixin, ConfigMixin):
    """``encode``: x [B,3,H,W] in [-1, 1] → (pixel_unshuffle(x) - shift) [B, 3f², H/f, W/f]; exact inverse.

    ``shift`` centres the mostly light-grey scenes so the diffusion starts from zero-mean data;
    ``scaling_factor`` then brings them to about unit variance, as SD's 0.18215 does for its latents.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        downscale_factor: int = 4,
        shift: float = 0.0,
        scaling_factor: float = 1.0,
        sample_size: int = 32,
    ):
        super().__init__()
        if downscale_factor < 1:
            raise ValueError(f"downscale_factor must be >= 1, got {downscale_factor}")
        # One element so ``.dtype``/``.device`` and ``.to()`` behave as for any diffusers model.
        self.register_buffer("anchor", torch.zeros(1), persistent=False)

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * self.config.downscale_factor**2

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        factor = self.config.downscale_factor
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the factor {factor}")
        mean = F.pixel_unshuffle(x, factor) - self.config.shift
        # zero variance: the "posterior" is the point itself
        dist = DiagonalGaussianDistribution(torch.cat([mean, torch.full_like(mean, -30.0)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        image = F.pixel_shuffle(z + self.config.shift, self.config.downscale_factor)
        return DecoderOutput(sample=image) if return_dict else (image,)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        return self.decode(self.encode(sample).latent_dist.mode(), return_dict=return_dict)


AUTOENCODER_CLASSES = {"AutoencoderKL": AutoencoderKL, "SpaceToDepthAutoencoder": SpaceToDepthAutoencoder}


def build_autoencoder(config: dict[str, Any]) -> torch.nn.Module:
    """``kind: space_to_depth`` builds the weightless autoencoder; anything else an ``AutoencoderKL``."""
    config = dict(config)
    kind = config.pop("kind", "kl")
    if kind == "space_to_depth":
        return SpaceToDepthAutoencoder(**config)
    if kind != "kl":
        raise ValueError(f"unknown vae kind {kind!r}: use 'kl' (AutoencoderKL) or 'space_to_depth'")
    return AutoencoderKL(**config)


def load_autoencoder(folder: str | Path, **kwargs) -> torch.nn.Module:
    """Load ``vae/`` with the class its ``config.json`` names (local files only)."""
    folder = Path(folder)
    name = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_class_name", "AutoencoderKL")
    if name not in AUTOENCODER_CLASSES:
        raise ValueError(f"{folder / 'config.json'}: unknown autoencoder class {name!r}; known: {sorted(AUTOENCODER_CLASSES)}")
    if name == "SpaceToDepthAutoencoder":  # no weights to read
        return SpaceToDepthAutoencoder.from_config(SpaceToDepthAutoencoder.load_config(folder))
    return AutoencoderKL.from_pretrained(folder, local_files_only=True, **kwargs)


def downscale_factor(vae: torch.nn.Module) -> int:
    """Pixels per latent cell along a side, for either autoencoder."""
    factor = getattr(vae.config, "downscale_factor", None)
    if factor is not None:
        return int(factor)
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_channels(vae: torch.nn.Module) -> int:
    return int(getattr(vae, "latent_channels", None) or vae.config.latent_channels)
