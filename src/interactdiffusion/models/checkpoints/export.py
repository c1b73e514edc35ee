"""Our own export format: the adapter as one safetensors file whose header carries its config."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ...atomic import write_file_atomic, write_text_atomic
from ..unet import adapter_state_dict
from .safe_load import ACCEPTED_FORMATS, CheckpointError, StateDict, _read_weights

log = logging.getLogger(__name__)

ADAPTER_FORMAT = "interactdiffusion-adapter"
ADAPTER_FORMAT_VERSION = 1


# -- our export ----------------------------------------------------------------------------------------
_BACKBONE_FIELDS = ("cross_attention_dim", "block_out_channels", "layers_per_block", "down_block_types",
                    "up_block_types", "attention_head_dim", "in_channels")


def _plain(value: Any) -> Any:
    """Config values (including OmegaConf containers) as JSON-able dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def _adapter_base(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix("")
    return path


def _with_suffix(base: Path, suffix: str) -> Path:
    return base.parent / (base.name + suffix)


def save_adapter(unet: nn.Module, path: str | Path, config: Mapping[str, Any] | None = None) -> Path:
    """Export the adapter: ``<path>.safetensors`` (adapter keys only, diffusers names) + ``<path>.json``.

    The JSON holds the grounding ``config`` given, the backbone's shape and the format version. The
    same JSON is stored in the safetensors header, and that copy is the one loaders use: weights and
    config are one file, published atomically, so a crash between the two files can never pair new
    weights with an old config. The sidecar is a readable copy, published second.
    """
    base = _adapter_base(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in adapter_state_dict(unet).items()}
    meta = {
        "format": ADAPTER_FORMAT,
        "format_version": ADAPTER_FORMAT_VERSION,
        "grounding_module": type(unet.position_net).__name__,
        "grounding": _plain(config or {}),
        "backbone": {k: _plain(unet.config[k]) for k in _BACKBONE_FIELDS if k in unet.config},
        "num_parameters": sum(v.numel() for v in state.values()),
    }
    text = json.dumps(meta, indent=2, sort_keys=True)
    weights = _with_suffix(base, ".safetensors")
    write_file_atomic(weights, lambda tmp: save_file(state, str(tmp), metadata={"format": ADAPTER_FORMAT, "config": text}))
    write_text_atomic(_with_suffix(base, ".json"), text + "\n")
    return weights


def _safetensors_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})\n{ACCEPTED_FORMATS}") from error


def export_config(path: str | Path) -> dict[str, Any]:
    """The config of an export of :func:`save_adapter`, read from the weights file's own header.

    The ``.json`` sidecar is only a readable copy: when it differs (an export interrupted between its
    two files, or a hand edit) the header wins and a warning names both files. Exports without a
    header config (none were written so) fall back to the sidecar.
    """
    base = _adapter_base(path)
    weights = _with_suffix(base, ".safetensors")
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such file (expected an export of save_adapter)")
    sidecar = _with_suffix(base, ".json")
    meta_text = _safetensors_metadata(weights).get("config")
    source = weights
    if not meta_text and sidecar.is_file():
        meta_text, source = sidecar.read_text(encoding="utf-8"), sidecar
    try:
        meta = json.loads(meta_text) if meta_text else {}
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{source}: its config is not valid JSON ({error})") from error
    if source == weights and sidecar.is_file():
        try:
            side = json.loads(sidecar.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            side = None
        if side != meta:
            log.warning("%s differs from the config inside %s (an interrupted export or an edit); using the "
                        "weights' own config", sidecar, weights)
    if meta.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(f"{weights}: not an {ADAPTER_FORMAT} export (format {meta.get('format')!r})")
    if meta.get("format_version") != ADAPTER_FORMAT_VERSION:
        raise CheckpointError(
            f"{weights}: format version {meta.get('format_version')} (this code reads {ADAPTER_FORMAT_VERSION})"
        )
    return meta


def load_adapter(path: str | Path) -> tuple[StateDict, dict[str, Any]]:
    """Read an export of :func:`save_adapter`: (adapter state dict, its config)."""
    meta = export_config(path)
    return _read_weights(_with_suffix(_adapter_base(path), ".safetensors")), meta
