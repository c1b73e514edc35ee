"""The settings of an evaluation row: the ``eval.*`` group checked, what the numbers depend on, and the
inputs that must exist before any image is generated.

``row_settings`` is what ``results.json`` records under ``settings``: a finished row is only reused
when a rerun asks for the same; ``generation_record`` is the subset the images depend on (kept in
``images/generation.json``), so a change of detector or protocol rescores without regenerating. Both
hold the sha256 of the backbone and weights beside their paths (``content_record``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..resume import content_fingerprint, settings_difference
from .sharding import Shard

log = logging.getLogger("interactdiffusion.eval")

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
STAND_IN_DETECTORS = ("random", "qpic_random", "fgahoi_random")


class EvalError(Exception):
    """Bad settings or inputs: reported in one message (the command exits with code 2)."""


@dataclass
class EvalSettings:
    """The ``eval.*`` group, checked; ``precision`` and ``device`` resolved for this process."""

    limit: int | None = None
    batch_size: int = 8
    steps: int = 50
    guidance_scale: float = 7.5
    beta: float = 1.0
    # The official [full, decay, off] triple of the fusers' scale; null = [beta, 0, 1 - beta].
    scheduled_sampling: list[float] | None = None
    seed: int = 489
    scheduler: str = "plms"
    scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    negative_prompt: str = ""
    resolution: int = 512
    precision: str = "auto"
    device: str = "auto"
    protocols: tuple[str, ...] = ("official", "fgahoi")
    real_images: bool = False
    overwrite: bool = False
    num_workers: int = 4
    gather_timeout_s: float | None = None
    # How generated images are stored: the official protocol is jpg at PIL's quality 75, truncated.
    image_format: str = "png"
    jpeg_quality: int = 75
    quantize: str = "round"

    @classmethod
    def from_config(cls, section: DictConfig | dict, shard: Shard | None = None) -> EvalSettings:
        from .hoi_map import PROTOCOLS

        values = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else dict(section)
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise EvalError(f"unknown eval settings {unknown}; known: {sorted(known)}")
        settings = cls(**values)
        settings.protocols = tuple(settings.protocols)
        bad = [p for p in settings.protocols if p not in PROTOCOLS]
        if bad or not settings.protocols:
            raise EvalError(f"eval.protocols must be a non-empty list of {list(PROTOCOLS)}, got {list(settings.protocols)}")
        if settings.limit is not None and int(settings.limit) < 1:
            raise EvalError(f"eval.limit must be a positive integer or null, got {settings.limit}")
        for name, low in (("batch_size", 1), ("steps", 1), ("resolution", 8), ("num_workers", 1)):
            if int(getattr(settings, name)) < low:
                raise EvalError(f"eval.{name} must be >= {low}, got {getattr(settings, name)}")
        if settings.resolution % 8:
            raise EvalError(f"eval.resolution must be a multiple of 8, got {settings.resolution}")
        if not 0.0 <= float(settings.beta) <= 1.0:
            raise EvalError(f"eval.beta must be in [0, 1], got {settings.beta}")
        if settings.scheduled_sampling is not None:
            from ..scheduled_sampling import schedule_triple

            try:
                settings.scheduled_sampling = list(schedule_triple(settings.beta, settings.scheduled_sampling))
            except (TypeError, ValueError) as error:
                raise EvalError(f"eval.scheduled_sampling: {error}") from None
        from .image_io import IMAGE_FORMATS, QUANTIZE_MODES

        if settings.image_format not in IMAGE_FORMATS:
            raise EvalError(f"eval.image_format must be one of {list(IMAGE_FORMATS)}, got {settings.image_format!r}")
        if settings.quantize not in QUANTIZE_MODES:
            raise EvalError(f"eval.quantize must be one of {list(QUANTIZE_MODES)}, got {settings.quantize!r}")
        if not 1 <= int(settings.jpeg_quality) <= 100:
            raise EvalError(f"eval.jpeg_quality must be in 1..100, got {settings.jpeg_quality}")
        if settings.precision not in PRECISIONS:
            raise EvalError(f"eval.precision must be one of {list(PRECISIONS)}, got {settings.precision!r}")
        settings.device = (shard or Shard()).device(str(settings.device))
        if settings.device.startswith("cuda") and not torch.cuda.is_available():
            raise EvalError(f"eval.device is {settings.device!r} but no CUDA device is available")
        if settings.precision == "auto":
            settings.precision = "fp16" if settings.device.startswith("cuda") else "fp32"
        settings.negative_prompt = settings.negative_prompt or ""
        return settings

    def generation_record(self) -> dict[str, Any]:
        """What an image depends on (besides backbone, weights and model), recorded with the images."""
        keys = ("steps", "guidance_scale", "beta", "scheduled_sampling", "seed", "scheduler", "scheduler_kwargs", "negative_prompt",
                "resolution", "precision", "image_format", "quantize")
        out = {k: _jsonable(getattr(self, k)) for k in keys}
        if self.image_format == "jpg":
            out["jpeg_quality"] = int(self.jpeg_quality)
        return out

    def scoring_record(self) -> dict[str, Any]:
        """Every setting a row's numbers depend on (``results.json`` ``settings``)."""
        out = {k: _jsonable(v) for k, v in asdict(self).items()
               if k not in ("batch_size", "device", "overwrite", "num_workers", "gather_timeout_s")}
        out["protocols"] = list(self.protocols)
        return out


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def plain(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def absolute(path: Any) -> str | None:
    return str(Path(str(path)).expanduser().resolve()) if path not in (None, "") else None


def missing_inputs(detector: Any = None, metrics: Any = None, weights: Any = None) -> list[str]:
    """Files that would only be opened after hours of generation (detector and Inception weights, the
    interaction weights): what is missing, each with where it goes."""
    from .image_metrics import INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL

    problems = []
    if weights and not Path(str(weights)).expanduser().exists():
        problems.append(f"weights: {weights} does not exist")
    detector = plain(detector) or {}
    if isinstance(detector, dict) and detector.get("weights") and not Path(str(detector["weights"])).expanduser().is_file():
        problems.append(f"detector.weights: {detector['weights']} does not exist (configs/detector/"
                        f"{detector.get('name') or detector.get('kind', '...')}.yaml says where to get it; "
                        "detector=random is a stand-in)")
    metrics = plain(metrics) or {}
    if isinstance(metrics, dict) and metrics and metrics.get("extractor", "inception") == "inception":
        path = metrics.get("inception_weights")
        if not path or not Path(str(path)).expanduser().is_file():
            problems.append(f"metrics.inception_weights: {path} does not exist (FID/KID need {INCEPTION_WEIGHTS_FILE}, "
                            f"{INCEPTION_WEIGHTS_URL}; metrics=null skips FID/KID)")
    return problems


def preflight(cfg: DictConfig, settings: EvalSettings) -> None:
    """Every input of the row checked before the first image is generated."""
    metrics = None if settings.real_images else cfg.get("metrics")
    problems = missing_inputs(cfg.get("detector"), metrics, cfg.get("weights"))
    anno_mat = cfg.data.get("anno_mat")
    if anno_mat and "official" in settings.protocols and not Path(str(anno_mat)).expanduser().is_file():
        problems.append(f"data.anno_mat: {anno_mat} does not exist (HICO-DET's anno.mat, whose image-level labels "
                        "define Known Object under the official protocol; data.anno_mat=null falls back to the GT "
                        "objects, with a warning in results.md)")
    image_dir = cfg.data.get("image_dir")
    if image_dir and not Path(str(image_dir)).expanduser().is_dir() and (metrics or settings.real_images):
        problems.append(f"data.image_dir: {image_dir} is not a folder (the real test images; data.image_dir=null "
                        "skips FID/KID)")
    if problems:
        raise EvalError("missing inputs:\n  " + "\n  ".join(problems))


# -- what a row's numbers depend on ---------------------------------------------------------------------
def device_name(device: str) -> str:
    """The GPU's name (results.json ``device``), or "cpu"."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def backbone_identity(backbone_cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """(its name, the config that builds it with an absolute path)."""
    spec = dict(plain(backbone_cfg))
    if spec.get("path"):
        spec["path"] = absolute(spec["path"])
    name = str(spec.get("name") or spec.get("kind") or "backbone")
    return name, {k: v for k, v in spec.items() if k != "resolution"}


def metrics_identity(metrics_cfg: Any) -> str | None:
    """The feature extractor a metrics config names (when the metrics are not built, e.g. the real row)."""
    spec = plain(metrics_cfg) or {}
    if not spec:
        return None
    kind = spec.get("extractor", "inception")
    if kind == "inception":
        weights = spec.get("inception_weights")
        return f"inception-v3-compat/2048/{Path(str(weights)).name}" if weights else "inception-v3-compat/2048"
    return f"{kind}/{spec.get('num_features', '')}/seed{spec.get('extractor_seed', 0)}".rstrip("/")


def content_record(backbone_spec: dict[str, Any], weights: Any) -> dict[str, Any]:
    """The bytes behind the backbone and weights paths: new weights under an old name are other settings."""
    return {"backbone_sha256": content_fingerprint(backbone_spec.get("path")),
            "weights_sha256": content_fingerprint(weights)}


def row_settings(cfg: DictConfig, settings: EvalSettings) -> dict[str, Any]:
    """``results.json`` ``settings``: everything the row's numbers depend on (compared on a rerun)."""
    data = cfg.data
    _, backbone_spec = backbone_identity(cfg.backbone)
    detector = {k: v for k, v in (plain(cfg.get("detector")) or {}).items() if k not in ("batch_size", "device")}
    if detector.get("weights"):
        detector["weights"] = absolute(detector["weights"])
    metrics = {k: v for k, v in (plain(cfg.get("metrics")) or {}).items() if k not in ("cache_dir", "device")}
    if metrics.get("inception_weights"):
        metrics["inception_weights"] = absolute(metrics["inception_weights"])
    return {
        **settings.scoring_record(),
        "backbone": backbone_spec,
        "weights": absolute(cfg.get("weights")),
        **content_record(backbone_spec, cfg.get("weights")),
        "model": (plain(cfg.get("model")) or {}).get("grounding"),
        "annotations": absolute(data.get("annotations")),
        "anno_mat": absolute(data.get("anno_mat")),
        "detector": detector,
        "metrics": metrics or None,
    }


def generation_record(cfg: DictConfig, settings: EvalSettings) -> dict[str, Any]:
    """What the images depend on: kept as images/generation.json, checked before reusing any image."""
    _, backbone_spec = backbone_identity(cfg.backbone)
    return {
        "backbone": backbone_spec,
        "weights": absolute(cfg.get("weights")),
        **content_record(backbone_spec, cfg.get("weights")),
        "model": (plain(cfg.get("model")) or {}).get("grounding"),
        **settings.generation_record(),
    }


def finished_row(results_path: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The results of a finished row with the same settings; None when there are none; an error when
    they were made with other settings."""
    if not results_path.is_file():
        return None
    try:
        existing = json.loads(results_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning(f"{results_path} is unreadable: evaluating the row again")
        return None
    old = existing.get("settings", {})
    detail = settings_difference(old, wanted)
    if detail is not None:
        raise EvalError(
            f"{results_path} holds results made with other settings ({detail}); use another row / output_dir, "
            "or eval.overwrite=true to evaluate again"
        )
    return existing


def is_meaningful(cfg: DictConfig, detector_name: str, uses_metrics: bool, real: bool) -> bool:
    """False when a stand-in decided the numbers: a random detector, the tiny backbone, the tiny extractor."""
    if str(detector_name) in STAND_IN_DETECTORS or "random" in str(detector_name):
        return False
    if not real and str(cfg.backbone.get("kind")) == "tiny":
        return False
    metrics = plain(cfg.get("metrics")) or {}
    return not (uses_metrics and metrics.get("extractor") == "tiny")
