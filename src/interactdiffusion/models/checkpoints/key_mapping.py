"""LDM <-> diffusers names of the UNet: the block-prefix rename of the adapter, diffusers' converter for the rest.

The official LDM files name blocks ``input_blocks.1.1`` where diffusers says ``down_blocks.0.attentions.0``;
below the block prefix the names are identical, so converting the adapter is a prefix rename derived from
the UNet config (the same block arithmetic diffusers' own LDM converter uses).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.single_file_utils import LDM_UNET_KEY, convert_ldm_unet_checkpoint

from ..unet import ADAPTER_PREFIX, SD1_UNET_CONFIG, is_adapter_key
from .safe_load import ACCEPTED_FORMATS, CheckpointError, StateDict


# -- LDM <-> diffusers block names ----------------------------------------------------------------------
def ldm_block_prefixes(unet_config: Mapping[str, Any] | None = None) -> dict[str, str]:
    """LDM → diffusers prefix of every attention block (the blocks that hold a fuser).

    Derived from the UNet config with the block arithmetic of diffusers' LDM converter: input block
    0 is ``conv_in``, each down block has ``layers_per_block`` blocks plus one for its downsampler
    (except the last), each up block ``layers_per_block + 1``. For SD-1.x this gives the 16 prefixes
    of the official release (``input_blocks.1.1`` → ``down_blocks.0.attentions.0`` ...).
    """
    config = SD1_UNET_CONFIG if unet_config is None else unet_config
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    layers = config["layers_per_block"]
    per_block = list(layers) if isinstance(layers, Sequence) else [layers] * len(down)
    prefixes: dict[str, str] = {}
    index = 1
    for block, (kind, n) in enumerate(zip(down, per_block)):
        for layer in range(n):
            if "CrossAttn" in kind:
                prefixes[f"input_blocks.{index}.1"] = f"down_blocks.{block}.attentions.{layer}"
            index += 1
        index += block < len(down) - 1
    mid = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid and "CrossAttn" in mid:
        prefixes["middle_block.1"] = "mid_block.attentions.0"
    index = 0
    for block, (kind, n) in enumerate(zip(up, reversed(per_block))):
        for layer in range(n + 1):
            if "CrossAttn" in kind:
                prefixes[f"output_blocks.{index}.1"] = f"up_blocks.{block}.attentions.{layer}"
            index += 1
    return prefixes


def _strip_ldm_prefix(state: Mapping[str, torch.Tensor]) -> StateDict:
    return {k.removeprefix(LDM_UNET_KEY): v for k, v in state.items()}


def _rename_blocks(state: Mapping[str, torch.Tensor], prefixes: Mapping[str, str]) -> StateDict:
    out = {}
    for key, value in state.items():
        if key.startswith(ADAPTER_PREFIX):
            out[key] = value
            continue
        for old, new in prefixes.items():
            if key.startswith(old + "."):
                out[new + key[len(old):]] = value
                break
        else:
            raise KeyError(f"{key!r} is not an adapter key of this UNet layout (fusers or position_net)")
    return out


def ldm_adapter_to_diffusers(state: Mapping[str, torch.Tensor], unet_config=None) -> StateDict:
    """Adapter keys in LDM names (``input_blocks.1.1...fuser.*``, ``position_net.*``) → diffusers names.

    Keys may carry the ``model.diffusion_model.`` prefix of an LDM checkpoint. ``unet_config``
    defaults to SD-1.x, the layout of every official file.
    """
    return _rename_blocks(_strip_ldm_prefix(state), ldm_block_prefixes(unet_config))


def diffusers_adapter_to_ldm(state: Mapping[str, torch.Tensor], unet_config=None) -> StateDict:
    """The inverse of :func:`ldm_adapter_to_diffusers` (the layout of ``ext_interactdiff_*.pth``)."""
    return _rename_blocks(state, {v: k for k, v in ldm_block_prefixes(unet_config).items()})


_LDM_BLOCKS = ("input_blocks.", "middle_block.", "output_blocks.")


def _adapter_in_diffusers_names(state: Mapping[str, torch.Tensor], path: Path, unet_config=None) -> StateDict:
    """The adapter keys of a whole-UNet or adapter-only dict in either naming, as diffusers names."""
    state = _strip_ldm_prefix(state)
    adapter = {k: v for k, v in state.items() if is_adapter_key(k)}
    if not adapter:
        raise CheckpointError(
            f"{path}: no adapter keys (fusers, position_net) among its {len(state)} tensors, "
            f"e.g. {sorted(state)[:3]}\n{ACCEPTED_FORMATS}"
        )
    if any(k.startswith(_LDM_BLOCKS) for k in adapter):
        try:
            return ldm_adapter_to_diffusers(adapter, unet_config)
        except KeyError as error:
            raise CheckpointError(f"{path}: {error.args[0]} (is the UNet config right?)") from error
    return adapter



def convert_ldm_unet(state: Mapping[str, torch.Tensor], unet_config=None) -> StateDict:
    """A whole LDM UNet (SD + adapter, with or without ``model.diffusion_model.``) → diffusers names.

    The SD part goes through diffusers' ``convert_ldm_unet_checkpoint``; the adapter through
    :func:`ldm_adapter_to_diffusers`. Keys that neither recognises are an error, never dropped.
    """
    config = dict(SD1_UNET_CONFIG if unet_config is None else unet_config)
    state = _strip_ldm_prefix(state)
    adapter = {k: v for k, v in state.items() if is_adapter_key(k)}
    sd = {LDM_UNET_KEY + k: v for k, v in state.items() if not is_adapter_key(k)}
    out = convert_ldm_unet_checkpoint(sd, config)
    converted = {id(v) for v in out.values()}
    left = sorted(k.removeprefix(LDM_UNET_KEY) for k, v in sd.items() if id(v) not in converted)
    if left:
        raise KeyError(f"{len(left)} UNet keys have no diffusers name for this config, e.g. {left[:3]}")
    out.update(ldm_adapter_to_diffusers(adapter, config))
    return out
