"""One reader for every accepted format: which format a file is, and its adapter in diffusers names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .export import ADAPTER_FORMAT, _adapter_base, _safetensors_metadata, _with_suffix, load_adapter
from .key_mapping import _adapter_in_diffusers_names
from .official import diffusers_unet_weights, is_full_checkpoint
from .safe_load import (
    ACCEPTED_FORMATS,
    CheckpointError,
    StateDict,
    _read_weights,
    _tensor_dict,
    read_checkpoint,
)


# -- one entry point for every format ------------------------------------------------------------------
def read_adapter_weights(path: str | Path, target_unet: nn.Module | None = None) -> tuple[str, StateDict]:
    """(format name, adapter keys in diffusers names) of any accepted file, as stored (no GLIGEN init)."""
    path = Path(path)
    unet_config = target_unet.config if target_unet is not None else None
    if path.is_dir():
        weights = diffusers_unet_weights(path)
        return "diffusers folder", _adapter_in_diffusers_names(_read_weights(weights), weights, unet_config)
    if not path.exists() and _with_suffix(_adapter_base(path), ".safetensors").is_file():
        path = _with_suffix(_adapter_base(path), ".safetensors")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or folder\n{ACCEPTED_FORMATS}")
    if path.suffix == ".json":
        path = _with_suffix(_adapter_base(path), ".safetensors")
    if path.suffix == ".safetensors":
        if _safetensors_metadata(path).get("format") == ADAPTER_FORMAT:
            return "interactdiffusion export", load_adapter(path)[0]
        return "safetensors", _adapter_in_diffusers_names(_read_weights(path), path, unet_config)
    return adapter_from_raw(read_checkpoint(path), path, target_unet)


def adapter_from_raw(raw: Any, path: Path, target_unet: nn.Module | None = None) -> tuple[str, StateDict]:
    """(format name, diffusers-named adapter keys) of a pickled file already read with :func:`read_checkpoint`."""
    unet_config = target_unet.config if target_unet is not None else None
    if is_full_checkpoint(raw):
        model = _tensor_dict(raw["model"], path, "'model'")
        return "full checkpoint", _adapter_in_diffusers_names(model, path, unet_config)
    return "adapter-only checkpoint", _adapter_in_diffusers_names(_tensor_dict(raw, path, "the file"), path, unet_config)
