"""Reading pickled checkpoints without running code, and the error every checkpoint reader raises.

Pickled files are read with ``torch.load(weights_only=True)``: nothing in a file can run code. The
official and GLIGEN files also pickle their OmegaConf training config; its globals (and only those)
unpickle as inert stand-ins.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..sharded import is_shard_index, read_sharded_safetensors

StateDict = dict[str, torch.Tensor]

ACCEPTED_FORMATS = """\
accepted adapter checkpoints:
  <name>.safetensors (+ <name>.json)         our export (save_adapter)
  ext_interactdiff_*.pth                      official adapter-only file (fusers + position_net, LDM names)
  interact-diffusion-v1*.pth                  official full checkpoint (dict with 'model', 'autoencoder', ...)
  <folder>/unet/diffusion_pytorch_model.*     official diffusers-format release (a pipeline or unet folder)
  GLIGEN text-box weights                     a .pth with 'model' or a diffusers folder; initialises the adapter"""


class CheckpointError(ValueError):
    """A file that is unreadable or not one of the accepted formats; the message names the file."""

# -- reading pickles safely ---------------------------------------------------------------------------
class DroppedObject:
    """Stand-in for a pickled object of the training config; it keeps nothing and runs nothing.

    The official and GLIGEN checkpoints store ``config_dict = vars(OmegaConf config)`` next to the
    weights. ``weights_only`` refuses its OmegaConf classes; instead of trusting them we unpickle each
    as this inert placeholder, so no constructor or ``__setstate__`` of the real class ever runs.
    """

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self) -> str:
        return "<dropped config object>"


def _plain_dict(*args) -> dict:
    return {}


_CONFIG_MODULES = ("omegaconf", "typing")
_CONFIG_TYPES = {
    f"builtins.{name}"
    for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
                 "bool", "object", "type", "NoneType")
}


def _config_stand_in(name: str):
    """The placeholder for a global that only the pickled config uses, or None to refuse it."""
    if name == "collections.defaultdict":
        return _plain_dict  # OmegaConf's flag caches; items are then set into a plain dict
    if name in _CONFIG_TYPES or name.split(".", 1)[0] in _CONFIG_MODULES:
        return DroppedObject
    return None


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` that also opens the official and GLIGEN ``.pth`` files.

    Tensors and plain containers load as usual; the globals of a pickled OmegaConf config (and only
    those) become :class:`DroppedObject`. Anything else (a pickled class or function) is refused
    with a :class:`CheckpointError` naming the file and the offending globals.

    The globals are listed from the pickle record alone (no tensor is read) before the one
    ``torch.load``, so a multi-GB official file is read once.
    """
    path = Path(path)
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint (legacy format, truncated, not torch): torch.load says why
        unsafe = []
    stand_ins = {name: _config_stand_in(name) for name in unsafe}
    refused = sorted(name for name, stand_in in stand_ins.items() if stand_in is None)
    if refused:
        raise CheckpointError(
            f"{path}: refused to unpickle {', '.join(refused)}: checkpoints are read with "
            f"torch.load(weights_only=True), which accepts tensors and plain containers only\n{ACCEPTED_FORMATS}"
        )
    with torch.serialization.safe_globals([(stand_in, name) for name, stand_in in stand_ins.items()]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"{path}: refused to unpickle its contents: checkpoints are read with torch.load(weights_only=True), "
                f"which accepts tensors and plain containers only ({error})\n{ACCEPTED_FORMATS}"
            ) from error
        except Exception as error:  # truncated zip, not a torch file, ...
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({error})\n{ACCEPTED_FORMATS}") from error


def _tensor_dict(value: Any, path: Path, what: str) -> StateDict:
    if not isinstance(value, Mapping) or not value:
        raise CheckpointError(f"{path}: {what} is not a state dict\n{ACCEPTED_FORMATS}")
    bad = [k for k, v in value.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(f"{path}: {what} holds non-tensor entries, e.g. {bad[:3]}\n{ACCEPTED_FORMATS}")
    return dict(value)


def _read_weights(path: Path) -> StateDict:
    """A flat state dict from a ``.safetensors`` file or a pickled ``.bin``/``.pth``."""
    if is_shard_index(path):
        return read_sharded_safetensors(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})\n{ACCEPTED_FORMATS}") from error
    return _tensor_dict(read_checkpoint(path), path, "the file")
