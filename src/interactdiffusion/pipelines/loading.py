"""Weights of every accepted format into a backbone, and whole pipeline folders.

``load_pipeline`` is the one entry point the CLIs, the evaluation and the app use: a pipeline folder
loads by itself, anything else goes into a backbone through ``load_weights``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPTextModel, CLIPTokenizer

from ..atomic import check_folder
from ..models import checkpoints
from ..models.backbone import Backbone, load_state_file
from ..models.grounding import GLIGENGrounding, InteractionTokenizer
from ..models.space_to_depth import load_autoencoder
from ..models.unet import (
    build_grounded_unet,
    install_grounding,
    is_adapter_key,
    load_adapter_state_dict,
)
from .schedulers import make_scheduler

if TYPE_CHECKING:
    from ..pipeline import InteractDiffusionPipeline

GROUNDING_CONFIG_NAME = "grounding_config.json"


def grounding_config_of(module: torch.nn.Module) -> dict[str, Any]:
    """The constructor arguments of a ``position_net`` (written next to the UNet by ``save_pretrained``)."""
    if isinstance(module, (InteractionTokenizer, GLIGENGrounding)):
        return dict(module.config)
    raise TypeError(f"the UNet's position_net is a {type(module).__name__}, not one of this project's modules")


# -- helpers ---------------------------------------------------------------------------------------
def _require(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing ({what} of the pipeline folder)")


def _load_grounded_unet(folder: Path, variant: str | None, grounding: dict[str, Any] | None) -> UNet2DConditionModel:
    _require(folder / "config.json", "the UNet config")
    if grounding is None and (folder / GROUNDING_CONFIG_NAME).is_file():
        grounding = json.loads((folder / GROUNDING_CONFIG_NAME).read_text(encoding="utf-8"))
    config = UNet2DConditionModel.load_config(folder)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    infix = f".{variant}" if variant else ""
    candidates = [folder / f"diffusion_pytorch_model{infix}.safetensors", folder / f"diffusion_pytorch_model{infix}.bin",
                  folder / f"diffusion_pytorch_model{infix}.safetensors.index.json"]
    weights = next((p for p in candidates if p.is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"no UNet weights in {folder}: expected {candidates[0].name} (or .bin)")
    state = load_state_file(weights)
    if grounding is None and checkpoints.is_gligen_adapter(state):
        grounding = {"kind": "gligen"}  # diffusers' GLIGEN release: text-box position_net, no action token
    unet = build_grounded_unet(config, grounding)
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        adapter_missing = [k for k in missing if is_adapter_key(k)]
        hint = (
            " (the folder has no interaction module: load an SD folder as a backbone and add the adapter)"
            if adapter_missing and len(adapter_missing) == len(missing)
            else ""
        )
        raise ValueError(
            f"{weights}: weights do not match the UNet (missing {len(missing)}, e.g. {missing[:3]}; "
            f"unexpected {len(unexpected)}, e.g. {unexpected[:3]}){hint}"
        )
    return unet


def load_sd_pipeline_folder(
    cls: type[InteractDiffusionPipeline], folder: Path, variant: str | None, scheduler, grounding: dict[str, Any] | None
) -> InteractDiffusionPipeline:
    """The parts of an SD-1.x pipeline folder (checked by ``InteractDiffusionPipeline.from_pretrained``), not
    yet placed on a device; every part must be there."""
    unet = _load_grounded_unet(folder / "unet", variant, grounding)
    part_kwargs: dict[str, Any] = {"local_files_only": True}
    if variant:
        part_kwargs["variant"] = variant
    _require(folder / "vae" / "config.json", "the VAE")
    _require(folder / "text_encoder" / "config.json", "the text encoder")
    _require(folder / "tokenizer", "the tokenizer")
    vae = load_autoencoder(folder / "vae", **{k: v for k, v in part_kwargs.items() if k != "local_files_only"})
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32, **part_kwargs)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    _require(scheduler_file, "the scheduler")
    saved = json.loads(scheduler_file.read_text(encoding="utf-8"))
    sched = make_scheduler(scheduler if scheduler is not None else saved.get("_class_name", "plms"), saved)
    return cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sched)


# -- weights ---------------------------------------------------------------------------------------
def is_pipeline_folder(path: str | Path) -> bool:
    """A whole pipeline (SD + adapter): ``save_pretrained`` output or the official diffusers release.

    A folder with a completion marker must match it (else :class:`~interactdiffusion.atomic.IncompleteFolderError`,
    which names the first missing or cut file). Folders without one (the official release, or an export
    from before markers) count only when every part ``model_index.json`` lists has its config, and the
    UNet its weights: a partial folder is never taken for a pipeline.
    """
    path = Path(path)
    if not (path.is_dir() and (path / "model_index.json").is_file()):
        return False
    if check_folder(path):
        return True
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    parts = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0] is not None]
    configs = ("config.json", "scheduler_config.json", "tokenizer_config.json", "vocab.json")
    if not parts or not all(any((path / p / c).is_file() for c in configs) for p in parts):
        return False
    return any((path / "unet").glob("diffusion_pytorch_model*"))


def load_weights(backbone: Backbone, weights: str | Path) -> str:
    """Load interaction weights into ``backbone`` in place; returns what was loaded, in words.

    - our export (``<name>.safetensors`` + ``<name>.json``): the adapter; when its recorded grounding
      config differs from the backbone's ``position_net`` (an ablation), the tokenizer is rebuilt first;
    - the official full ``.pth``: the whole UNet (SD + adapter), the VAE and the text encoder;
    - the official adapter-only ``.pth``, a diffusers folder's UNet, GLIGEN weights: the adapter
      (``models.checkpoints.load_adapter_into``; GLIGEN becomes an initialisation, with a report).

    A pickled file is read once and dispatched on what it holds.
    """
    path = Path(weights).expanduser()
    unet = backbone.unet
    read = None
    if path.suffix in (".pth", ".pt", ".ckpt") and path.is_file():
        raw = checkpoints.read_checkpoint(path)
        if checkpoints.is_full_checkpoint(raw):
            full = checkpoints.official_full_from_raw(raw, path, unet_config=unet.config)
            return _load_full_checkpoint(backbone, full, path)
        read = checkpoints.adapter_from_raw(raw, path, unet)
    elif path.suffix in (".safetensors", ".json") or not path.exists():
        _match_exported_grounding(unet, path)
    missing = checkpoints.load_adapter_into(unet, path, read=read)
    return f"adapter from {path}" + (f" ({len(missing)} keys missing)" if missing else "")


def _match_exported_grounding(unet: UNet2DConditionModel, path: Path) -> None:
    """Rebuild ``position_net`` when our export says it was trained with another grounding config."""
    try:
        meta = checkpoints.export_config(path)
    except checkpoints.CheckpointError:
        return  # not our export: load_adapter_into reads (or rejects) it
    recorded = dict(meta.get("grounding") or {})
    if not recorded and meta.get("grounding_module") == "GLIGENGrounding":
        recorded = {"kind": "gligen"}
    recorded.pop("init_from", None)
    current = grounding_config_of(unet.position_net)
    if recorded.get("kind", current["kind"]) != current["kind"]:
        current = {k: v for k, v in current.items() if k in ("positive_len", "out_dim")}
    wanted = {**current, **recorded}
    if wanted != grounding_config_of(unet.position_net):
        install_grounding(unet, wanted).to(device=unet.device, dtype=unet.dtype)


def _load_full_checkpoint(backbone: Backbone, full: checkpoints.OfficialCheckpoint, path: Path) -> str:
    unet = backbone.unet
    adapter = full.adapter
    if checkpoints.is_gligen_adapter(adapter) and not isinstance(unet.position_net, GLIGENGrounding):
        adapter = checkpoints.init_from_gligen(adapter, unet, source=str(path))[0]
    sd = {k: v for k, v in full.unet.items() if not is_adapter_key(k)}
    missing, unexpected = unet.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not is_adapter_key(k)]
    if missing or unexpected:
        raise checkpoints.CheckpointError(
            f"{path}: the UNet does not fit the backbone (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    load_adapter_state_dict(unet, adapter)
    parts = ["UNet"]
    if full.vae is not None:
        backbone.vae.load_state_dict(full.vae)
        parts.append("VAE")
    if full.text_encoder is not None:
        backbone.text_encoder.load_state_dict(full.text_encoder)
        parts.append("text encoder")
    return f"official full checkpoint {path} ({', '.join(parts)})"


def load_pipeline(
    backbone: Backbone | Callable[[], Backbone] | None,
    weights: str | Path | None = None,
    scheduler: str | SchedulerMixin = "plms",
    precision: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> tuple[InteractDiffusionPipeline, str]:
    """The pipeline for a backbone + weights pair, and a line saying what was loaded.

    A whole pipeline folder as ``weights`` is loaded by itself (its own SD weights; the backbone is
    not built). ``backbone`` may be a callable so that it is only built when needed.
    """
    from ..pipeline import InteractDiffusionPipeline  # the pipeline module imports this one

    if weights is not None and is_pipeline_folder(weights):
        pipe = InteractDiffusionPipeline.from_pretrained(weights, scheduler=scheduler, precision=precision, device=device)
        return pipe, f"pipeline folder {weights}"
    if backbone is None:
        raise ValueError("a backbone is needed unless weights is a whole pipeline folder")
    if callable(backbone) and not isinstance(backbone, Backbone):
        backbone = backbone()
    what = load_weights(backbone, weights) if weights is not None else f"the backbone {backbone.name} as it is"
    pipe = InteractDiffusionPipeline.from_backbone(backbone, scheduler=scheduler, precision=precision, device=device)
    return pipe, what
