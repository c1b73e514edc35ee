"""The settings record of ``generate.yaml``: everything an image depends on, checked, recorded with it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from ..atomic import IncompleteFolderError
from ..resume import content_fingerprint

PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")


class InputError(Exception):
    """Bad input or settings: reported in one message, exit code 2, nothing generated."""


@dataclass
class Settings:
    """Everything that decides what an image looks like (recorded with each image) + how to run."""

    steps: int
    guidance_scale: float
    beta: float
    seed: int
    scheduler: str
    scheduler_kwargs: dict[str, Any]
    eta: float
    precision: str
    negative_prompt: str
    resolution: int
    use_scene_size: bool
    backbone: str
    weights: str | None
    grounding: dict[str, Any] = field(default_factory=dict)
    # The bytes behind those paths: re-published weights under the same name are other settings.
    backbone_sha256: str | None = None
    weights_sha256: str | None = None
    # How to run: not part of the record, an image does not depend on them.
    batch_size: int = 8
    device: str = "cpu"

    RUN_ONLY = ("batch_size", "device")

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in self.RUN_ONLY}


def setting(cfg: DictConfig, key: str) -> Any:
    """``cfg.key``; a missing mandatory value is an error naming the setting."""
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        raise InputError(f"setting {key!r} is required, e.g. {key}=...") from None


def number(cfg: DictConfig, key: str, kind: type, low: float | None = None, high: float | None = None):
    """``cfg.key`` as an int or float in [low, high]; anything else is an error naming the setting."""
    value = setting(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise InputError(f"setting {key!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    value = kind(value)
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise InputError(f"setting {key!r} must be in {bounds}, got {value!r}")
    return value


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"setting 'device' is {device!r} but no CUDA device is available")
    return device


def read_settings(cfg: DictConfig) -> Settings:
    """The numeric and named settings, each checked; an error names the setting."""
    from ..pipeline import SCHEDULER_PRESETS, is_pipeline_folder, make_scheduler

    precision = str(setting(cfg, "precision")).lower()
    if precision not in PRECISION_CHOICES:
        raise InputError(f"setting 'precision' must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    device = resolve_device(str(setting(cfg, "device")))
    if precision == "auto":
        precision = "fp16" if device.startswith("cuda") else "fp32"
    scheduler = str(setting(cfg, "scheduler"))
    scheduler_kwargs = OmegaConf.to_container(cfg.scheduler_kwargs, resolve=True) if cfg.scheduler_kwargs else {}
    if scheduler.lower() not in SCHEDULER_PRESETS:
        try:
            make_scheduler(scheduler, {})
        except ValueError as error:
            raise InputError(f"setting 'scheduler': {error}") from None
    resolution = number(cfg, "resolution", int, 8)
    if resolution % 8:
        raise InputError(f"setting 'resolution' must be a multiple of 8, got {resolution}")
    grounding = cfg.get("model", {}).get("grounding") or {}
    weights = cfg.get("weights")
    try:
        whole_pipeline = bool(weights) and is_pipeline_folder(Path(weights).expanduser())
    except IncompleteFolderError as error:
        raise InputError(f"setting 'weights': {error}") from None
    if whole_pipeline:
        backbone, backbone_path = "(the pipeline folder in weights)", None  # it brings its own SD weights
    else:
        backbone = str(cfg.backbone.get("path") or cfg.backbone.get("name") or cfg.backbone.get("kind"))
        backbone_path = cfg.backbone.get("path")
    return Settings(
        steps=number(cfg, "steps", int, 1),
        guidance_scale=number(cfg, "guidance_scale", float, 0.0),
        beta=number(cfg, "beta", float, 0.0, 1.0),
        seed=number(cfg, "seed", int, 0),
        scheduler=scheduler,
        scheduler_kwargs=dict(scheduler_kwargs),
        eta=number(cfg, "eta", float, 0.0),
        precision=precision,
        negative_prompt=str(setting(cfg, "negative_prompt") or ""),
        resolution=resolution,
        use_scene_size=bool(setting(cfg, "use_scene_size")),
        backbone=backbone,
        weights=str(Path(weights).expanduser().resolve()) if weights else None,
        grounding=OmegaConf.to_container(grounding, resolve=True) if isinstance(grounding, DictConfig) else {},
        backbone_sha256=content_fingerprint(backbone_path),
        weights_sha256=content_fingerprint(weights),
        batch_size=number(cfg, "batch_size", int, 1),
        device=device,
    )
