"""Checkpoint formats of the interaction module: the official releases, GLIGEN, and our own export.

Every reader returns the same thing: the adapter (fusers + ``position_net``) in diffusers key names,
exactly the keys of :func:`~interactdiffusion.models.unet.adapter_state_dict`. The official LDM
files name blocks ``input_blocks.1.1`` where diffusers says ``down_blocks.0.attentions.0``; below the
block prefix the names are identical, so converting the adapter is a prefix rename derived from the
UNet config (the same block arithmetic diffusers' own LDM converter uses). The Stable Diffusion part
of a full checkpoint goes through diffusers' converter unchanged.

Pickled files are read with ``torch.load(weights_only=True)``: nothing in a file can run code.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.single_file_utils import (
    LDM_UNET_KEY,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import write_file_atomic, write_text_atomic
from .grounding import GLIGENGrounding
from .sharded import is_shard_index, read_sharded_safetensors
from .unet import ADAPTER_PREFIX, SD1_UNET_CONFIG, adapter_state_dict, is_adapter_key, load_adapter_state_dict

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

ADAPTER_FORMAT = "interactdiffusion-adapter"
ADAPTER_FORMAT_VERSION = 1

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


# -- GLIGEN as initialisation -----------------------------------------------------------------------------
_FROM_GLIGEN = {  # target prefix -> GLIGEN prefix it is copied from
    "position_net.linear_action.": "position_net.linears.",
    "position_net.null_action_feature": "position_net.null_positive_feature",
}
NEW_EMBEDDINGS = ("position_net.interaction_embedding.emb.weight", "position_net.position_embedding.emb.weight")
NEW_EMBEDDING_STD = 0.02


@dataclass
class InitReport:
    """What an initialisation from GLIGEN did, key by key."""

    source: str
    copied: list[str] = field(default_factory=list)
    derived: dict[str, str] = field(default_factory=dict)  # new key -> the GLIGEN key it copies
    created: list[str] = field(default_factory=list)  # drawn from N(0, 0.02)
    ignored: list[str] = field(default_factory=list)  # in the file, not used by the target

    def __str__(self) -> str:
        fusers = sum(".fuser." in k for k in self.copied)
        lines = [
            f"initialised the adapter from GLIGEN weights {self.source}:",
            f"  copied as-is: {len(self.copied)} keys ({fusers} fuser keys incl. their alphas, "
            f"{len(self.copied) - fusers} position_net keys)",
        ]
        lines += [f"  copied {src} -> {dst}" for dst, src in self.derived.items()]
        lines += [f"  created {k} ~ N(0, {NEW_EMBEDDING_STD})" for k in self.created]
        if self.ignored:
            lines.append(f"  ignored (not in this model): {', '.join(self.ignored)}")
        return "\n".join(lines)


def _gligen_source(key: str) -> str | None:
    for target, source in _FROM_GLIGEN.items():
        if key.startswith(target):
            return source + key[len(target):]
    return None


def _default_target_shapes(gligen: Mapping[str, torch.Tensor], max_interactions: int = 30) -> dict[str, torch.Size]:
    """The full InteractDiffusion key set grown from a GLIGEN adapter (when no target UNet is given)."""
    shapes = {k: v.shape for k, v in gligen.items()}
    for key, value in gligen.items():
        for target, source in _FROM_GLIGEN.items():
            if key.startswith(source):
                shapes[target + key[len(source):]] = value.shape
    out_dim = gligen["position_net.linears.4.weight"].shape[0]
    shapes[NEW_EMBEDDINGS[0]] = torch.Size([max_interactions, out_dim])
    shapes[NEW_EMBEDDINGS[1]] = torch.Size([3, out_dim])
    return shapes


def init_from_gligen(state: str | Path | Mapping[str, torch.Tensor], target_unet: nn.Module | None = None,
                     seed: int = 0, source: str | None = None) -> tuple[StateDict, InitReport]:
    """GLIGEN text-box weights as the starting point of an InteractDiffusion adapter.

    ``state`` is a file or folder in any accepted format, or a diffusers-named state dict. The fusers
    (with their non-zero alphas) and GLIGEN's ``position_net`` are copied as-is; ``linear_action`` is
    an explicit copy of ``linears`` and ``null_action_feature`` of ``null_positive_feature``; the
    instance and role embeddings are drawn from N(0, 0.02) with ``seed``. The key set follows
    ``target_unet`` (so the ``gligen`` variant and the ablations get exactly their keys), or the
    full InteractDiffusion set when it is None. Unlike the official code, this does not depend on the
    file's name. The report is returned and logged.
    """
    if isinstance(state, (str, Path)):
        source = source or str(state)
        state = read_adapter_weights(state, target_unet)[1]
    source = source or "(state dict)"
    gligen = {k: v for k, v in state.items() if is_adapter_key(k)}
    if "position_net.linears.4.weight" not in gligen:
        raise CheckpointError(f"{source}: no GLIGEN text-box position_net (position_net.linears.*) found")
    if any(k.startswith("position_net.linear_action.") for k in gligen):
        raise CheckpointError(f"{source}: already has linear_action, so it is an InteractDiffusion adapter, not GLIGEN")
    if target_unet is not None:
        shapes = {k: v.shape for k, v in adapter_state_dict(target_unet).items()}
    else:
        shapes = _default_target_shapes(gligen)
    dtype = gligen["position_net.linears.4.weight"].dtype
    generator = torch.Generator().manual_seed(seed)
    report = InitReport(source)
    out: StateDict = {}
    for key in sorted(shapes):
        src = _gligen_source(key)
        if key in gligen:
            out[key] = gligen[key]
            report.copied.append(key)
        elif src is not None and src in gligen:
            out[key] = gligen[src].clone()
            report.derived[key] = src
        elif key in NEW_EMBEDDINGS:
            out[key] = (torch.randn(shapes[key], generator=generator) * NEW_EMBEDDING_STD).to(dtype)
            report.created.append(key)
        else:
            raise CheckpointError(f"{source}: the GLIGEN weights have nothing to initialise {key} from")
    used = set(report.copied) | set(report.derived.values())
    report.ignored = sorted(set(gligen) - used)
    log.info("%s", report)
    return out, report


def is_gligen_adapter(state: Mapping[str, torch.Tensor]) -> bool:
    """GLIGEN's text-box ``position_net`` has ``linears`` but no ``linear_action``."""
    return "position_net.linears.0.weight" in state and "position_net.linear_action.0.weight" not in state


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


def load_adapter_weights(path: str | Path, target_unet: nn.Module | None = None, from_gligen: bool | None = None,
                         seed: int = 0, read: tuple[str, StateDict] | None = None) -> StateDict:
    """Diffusers-named adapter weights from any accepted file (see ``ACCEPTED_FORMATS``).

    GLIGEN weights (``from_gligen=True``, or detected by the absence of ``linear_action``) become an
    InteractDiffusion initialisation via :func:`init_from_gligen`, except for a ``gligen`` variant
    target, whose ``position_net`` has GLIGEN's own keys and loads them directly. ``read`` is what
    :func:`read_adapter_weights` (or :func:`adapter_from_raw`) already returned for ``path``.
    """
    kind, state = read if read is not None else read_adapter_weights(path, target_unet)
    log.info("read %s as %s (%d adapter keys)", path, kind, len(state))
    if from_gligen is None:
        gligen_target = target_unet is not None and isinstance(target_unet.position_net, GLIGENGrounding)
        from_gligen = is_gligen_adapter(state) and not gligen_target
    if from_gligen:
        state = init_from_gligen(state, target_unet, seed=seed, source=str(path))[0]
    return state


def load_adapter_into(unet: nn.Module, path: str | Path, strict: bool = True, from_gligen: bool | None = None,
                      seed: int = 0, read: tuple[str, StateDict] | None = None) -> list[str]:
    """Load adapter weights from any accepted file into a grounded UNet; returns missing keys.

    Weights for another backbone or tokenizer shape raise a ``ValueError`` naming the file and the
    first mismatching keys.
    """
    state = load_adapter_weights(path, unet, from_gligen=from_gligen, seed=seed, read=read)
    try:
        return load_adapter_state_dict(unet, state, strict=strict)
    except (KeyError, ValueError) as error:
        message = error.args[0] if error.args else str(error)
        raise CheckpointError(f"{path}: {message}") from error
