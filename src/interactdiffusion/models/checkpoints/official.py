"""Readers of the official releases: the full checkpoint, the adapter-only file and the diffusers folder.

The Stable Diffusion part of a full checkpoint goes through diffusers' converter unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from ..unet import is_adapter_key
from .key_mapping import _adapter_in_diffusers_names, _strip_ldm_prefix, convert_ldm_unet
from .safe_load import (
    ACCEPTED_FORMATS,
    CheckpointError,
    StateDict,
    _read_weights,
    _tensor_dict,
    read_checkpoint,
)


# -- official files ----------------------------------------------------------------------------------
@dataclass
class OfficialCheckpoint:
    """A full official (or GLIGEN) checkpoint in diffusers names.

    ``unet`` is the whole UNet (SD + fusers + ``position_net``); ``vae`` and ``text_encoder`` are
    converted when the file holds them; ``dropped`` names what was left out and why.
    """

    unet: StateDict
    vae: StateDict | None = None
    text_encoder: StateDict | None = None
    dropped: list[str] = field(default_factory=list)

    @property
    def adapter(self) -> StateDict:
        return {k: v for k, v in self.unet.items() if is_adapter_key(k)}



def _vae_config_from_keys(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The two fields diffusers' VAE converter reads, counted from the LDM keys."""
    blocks = {int(m.group(1)) for k in state if (m := re.search(r"encoder\.down\.(\d+)\.", k))}
    n = max(blocks, default=-1) + 1
    return {"down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n}


def _convert_text_encoder(state: Mapping[str, torch.Tensor], dropped: list[str]) -> StateDict:
    """GLIGEN's ``FrozenCLIPEmbedder`` keys (``transformer.text_model.*``) → ``CLIPTextModel`` keys.

    The ``position_ids`` buffer that old transformers versions saved is dropped: it is a constant
    ``arange`` that current versions no longer keep in the state dict.
    """
    out = {}
    for key, value in state.items():
        key = key.removeprefix("cond_stage_model.").removeprefix("transformer.")
        if key.endswith("embeddings.position_ids"):
            dropped.append(f"text_encoder.{key} (constant buffer)")
            continue
        out[key] = value
    return out


def load_official_full_checkpoint(path: str | Path, unet_config=None, vae: bool = True,
                                  text_encoder: bool = True) -> OfficialCheckpoint:
    """Read ``interact-diffusion-v1*.pth`` (or GLIGEN's ``checkpoint_generation_text.pth``).

    The file is ``{'model', 'autoencoder', 'text_encoder', 'diffusion', 'config_dict'}`` with the UNet
    in LDM names. ``diffusion`` (the noise schedule as buffers) and ``config_dict`` are dropped; the
    schedule comes from the scheduler config.
    """
    path = Path(path)
    return official_full_from_raw(read_checkpoint(path), path, unet_config, vae=vae, text_encoder=text_encoder)


def is_full_checkpoint(raw: Any) -> bool:
    """A full official/GLIGEN checkpoint (``{'model': ..., ...}``) rather than an adapter-only dict."""
    return isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping)


def official_full_from_raw(raw: Any, path: Path, unet_config=None, vae: bool = True,
                           text_encoder: bool = True) -> OfficialCheckpoint:
    """:func:`load_official_full_checkpoint` on a file already read with :func:`read_checkpoint`."""
    if not isinstance(raw, Mapping) or "model" not in raw:
        raise CheckpointError(f"{path}: not a full checkpoint (no 'model' entry)\n{ACCEPTED_FORMATS}")
    try:
        unet = convert_ldm_unet(_tensor_dict(raw["model"], path, "'model'"), unet_config)
    except KeyError as error:
        raise CheckpointError(f"{path}: {error.args[0]}") from error
    dropped = [f"{name} (not needed)" for name in ("diffusion", "config_dict") if name in raw]
    result = OfficialCheckpoint(unet, dropped=dropped)
    if vae and "autoencoder" in raw:
        autoencoder = _tensor_dict(raw["autoencoder"], path, "'autoencoder'")
        result.vae = convert_ldm_vae_checkpoint(autoencoder, _vae_config_from_keys(autoencoder))
    if text_encoder and "text_encoder" in raw:
        state = _tensor_dict(raw["text_encoder"], path, "'text_encoder'")
        result.text_encoder = _convert_text_encoder(state, result.dropped)
    return result


def load_official_adapter(path: str | Path, unet_config=None) -> StateDict:
    """Read the adapter-only ``ext_interactdiff_*.pth`` (LDM names) as diffusers-named adapter keys."""
    path = Path(path)
    state = _tensor_dict(read_checkpoint(path), path, "the file")
    extra = sorted(k for k in _strip_ldm_prefix(state) if not is_adapter_key(k))
    if extra:
        raise CheckpointError(f"{path}: not adapter-only, it also holds {extra[:3]}\n{ACCEPTED_FORMATS}")
    return _adapter_in_diffusers_names(state, path, unet_config)


_DIFFUSERS_WEIGHTS = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.safetensors.index.json",  # sharded (an SDXL UNet with its fusers)
    "diffusion_pytorch_model.fp16.bin",
)


def diffusers_unet_weights(folder: str | Path) -> Path:
    """The UNet weight file of a diffusers pipeline folder (``<folder>/unet/``) or UNet folder."""
    folder = Path(folder)
    for unet_dir in (folder / "unet", folder):
        for name in _DIFFUSERS_WEIGHTS:
            if (unet_dir / name).is_file():
                return unet_dir / name
    raise CheckpointError(
        f"{folder}: no unet/diffusion_pytorch_model.safetensors (or .bin) in this folder\n{ACCEPTED_FORMATS}"
    )


def load_diffusers_adapter(folder: str | Path) -> StateDict:
    """The adapter keys (``position_net.*``, ``...fuser.*``) of a diffusers-format release."""
    weights = diffusers_unet_weights(folder)
    return _adapter_in_diffusers_names(_read_weights(weights), weights)

