"""Image quality: FID and KID through torchmetrics (torch-fidelity's Inception), an optional CLIP score.

- The Inception network is torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's "inception-v3-compat",
  2048-d pool features) built from a local weights file with ``antialias=False``, i.e. torch-fidelity's
  TF1-compatible resize, so numbers match torch-fidelity and the paper's table (REFERENCE §7). This is
  exactly the network ``FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=...,
  antialias=False)`` builds; it runs once per image here, and its features feed torchmetrics'
  ``FrechetInceptionDistance`` and ``KernelInceptionDistance`` (given a pass-through ``feature`` module), so
  the reference features can be cached and both metrics share one forward pass.
- Inputs are uint8 RGB batches ``[B, 3, H, W]``.
- The real images' features are computed once and cached on disk (safetensors), keyed by the extractor's
  identity, the image list and the resolution.
- KID uses 100 subsets of 1000 (torch-fidelity's default); with fewer samples the subset size shrinks to
  the sample count, with a warning, because such a KID is not comparable with published numbers.
- ``TinyFeatureExtractor`` is a small seeded random conv net for tests and the tiny profile. The extractors live in
  ``feature_extractors`` and are re-exported here.
- Nothing downloads: a missing weights file is an error that names the file and where it goes.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import write_file_atomic
from .feature_extractors import (
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    InceptionFeatures,
    MetricWeightsError,
    TinyFeatureExtractor,
    build_feature_extractor,
)

__all__ = [  # the feature extractors moved to ``feature_extractors``; they are re-exported here
    "INCEPTION_WEIGHTS_FILE", "INCEPTION_WEIGHTS_URL", "KID_SUBSETS", "KID_SUBSET_SIZE", "ClipScore",
    "ImageQualityMetrics", "InceptionFeatures", "KIDSubsetWarning", "MetricWeightsError", "TinyFeatureExtractor",
    "build_feature_extractor", "build_image_metrics", "cached_reference_features", "extract_features",
    "reference_cache_path", "reference_key",
]

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


class KIDSubsetWarning(UserWarning):
    """KID computed with subsets smaller than requested (too few images): not comparable with the paper."""


class _Precomputed(nn.Module):
    """The ``feature`` module the torchmetrics metrics see: features are computed once, outside."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


# -- reference statistics cache ---------------------------------------------------------------------------------
def reference_key(extractor_identity: str, image_ids: Sequence[str], resolution: Any) -> str:
    """Hash of what determines the reference features (the order of ``image_ids`` does not matter)."""
    payload = json.dumps(
        {"extractor": extractor_identity, "images": sorted(map(str, image_ids)), "resolution": resolution},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def reference_cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"reference-features-{key[:24]}.safetensors"


@torch.no_grad()
def extract_features(
    extractor: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str | None = None
) -> torch.Tensor:
    """Features [N, F] (float32, CPU) of uint8 batches."""
    device = device if device is not None else _module_device(extractor)
    parts = [extractor(_check_uint8(batch).to(device)).float().cpu() for batch in batches]
    if not parts:
        return torch.zeros(0, extractor.num_features)
    return torch.cat(parts)


def cached_reference_features(
    extractor: nn.Module,
    image_ids: Sequence[str],
    batches: Callable[[], Iterable[torch.Tensor]],
    resolution: Any,
    cache_dir: str | Path | None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, bool]:
    """The real images' features, from the cache when present (``(features, True)``), else computed from
    ``batches()`` (uint8, in any order, one image per id) and written to the cache (``(features, False)``)."""
    key = reference_key(extractor.identity, image_ids, resolution)
    path = reference_cache_path(cache_dir, key) if cache_dir is not None else None
    if path is not None and path.is_file():
        features = load_file(str(path))["features"]
        if features.shape == (len(image_ids), extractor.num_features):
            return features, True
        warnings.warn(f"ignoring the reference cache {path}: shape {tuple(features.shape)} does not match", stacklevel=2)
    features = extract_features(extractor, batches(), device)
    if features.shape[0] != len(image_ids):
        raise ValueError(f"the reference batches gave {features.shape[0]} images for {len(image_ids)} image ids")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "key": key,
            "extractor": extractor.identity,
            "resolution": json.dumps(resolution),
            "num_images": str(len(image_ids)),
        }
        # atomic: concurrent ranks never read a half-written file
        write_file_atomic(path, lambda tmp: save_file({"features": features.contiguous()}, str(tmp), metadata=metadata))
    return features, False


# -- the streaming metric ------------------------------------------------------------------------------------------
def _check_uint8(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise TypeError(f"expected uint8 RGB batches [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    return images


def _module_device(module: nn.Module) -> torch.device:
    tensor = next(iter(module.parameters()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _global_sum(value: int, device: torch.device) -> int:
    if _dist_info()[1] == 1:
        return value
    tensor = torch.tensor([value], device=device, dtype=torch.long)
    torch.distributed.all_reduce(tensor)
    return int(tensor.item())


class ImageQualityMetrics:
    """FID / KID of generated images against real ones, fed in batches.

    ``update_real`` / ``update_fake`` take uint8 batches; ``add_reference`` serves the real side from the
    disk cache; ``compute()`` returns ``{"fid", "kid_mean", "kid_std", ...}``. The real side survives
    ``reset_fake()``, so one instance scores several generated sets (a training callback) against one
    reference. Under DDP each rank feeds its own shard; states are gathered by torchmetrics at compute.
    """

    def __init__(
        self,
        extractor: nn.Module,
        *,
        fid: bool = True,
        kid: bool = True,
        kid_subsets: int = KID_SUBSETS,
        kid_subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        device: torch.device | str | None = None,
    ):
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device) if device is not None else _module_device(extractor)
        self.extractor = extractor.eval().to(self.device)
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        self.cache_dir = cache_dir
        features = _Precomputed(extractor.num_features)
        self.fid = (
            FrechetInceptionDistance(feature=features, reset_real_features=False).to(self.device) if fid else None
        )
        self.kid = None
        if kid:
            with warnings.catch_warnings():  # "KID will save all extracted features": that is the point
                warnings.simplefilter("ignore", UserWarning)
                self.kid = KernelInceptionDistance(
                    feature=features, subsets=kid_subsets, subset_size=kid_subset_size, reset_real_features=False
                ).to(self.device)
        self.num_real = 0
        self.num_fake = 0

    def _add(self, features: torch.Tensor, real: bool) -> None:
        features = features.to(self.device, torch.float32)
        for metric in (self.fid, self.kid):
            if metric is not None:
                metric.update(features, real=real)
        if real:
            self.num_real += features.shape[0]
        else:
            self.num_fake += features.shape[0]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor(_check_uint8(images).to(self.device)).float()

    def update_real(self, images: torch.Tensor) -> None:
        self._add(self.features(images), real=True)

    def update_fake(self, images: torch.Tensor) -> None:
        self._add(self.features(images), real=False)

    def add_real_features(self, features: torch.Tensor) -> None:
        if features.numel():
            self._add(features, real=True)

    def add_reference(
        self,
        image_ids: Sequence[str],
        batches: Callable[[], Iterable[torch.Tensor]],
        resolution: Any,
    ) -> bool:
        """Real side from the cache (or computed once and cached); True when it came from the cache.

        Under DDP every rank gets the whole reference and keeps its own shard, so the gathered state
        holds each real image once (build the cache on one rank first to avoid computing it on all).
        """
        features, hit = cached_reference_features(
            self.extractor, image_ids, batches, resolution, self.cache_dir, self.device
        )
        rank, world = _dist_info()
        self.add_real_features(features[rank::world])
        return hit

    def reset_fake(self) -> None:
        for metric in (self.fid, self.kid):
            if metric is not None:
                metric.reset()  # reset_real_features=False: the reference stays
        self.num_fake = 0

    def compute(self) -> dict[str, float]:
        num_real = _global_sum(self.num_real, self.device)
        num_fake = _global_sum(self.num_fake, self.device)
        results: dict[str, float] = {"num_real": num_real, "num_fake": num_fake}
        if self.fid is not None:
            if min(num_real, num_fake) < 2:
                warnings.warn(f"FID needs ≥ 2 images per side (real {num_real}, fake {num_fake}): NaN", stacklevel=2)
                results["fid"] = math.nan
            else:
                results["fid"] = float(self.fid.compute())
        if self.kid is not None:
            subset = min(self.kid_subset_size, num_real, num_fake)
            results["kid_subset_size"] = subset
            if subset < self.kid_subset_size:
                warnings.warn(
                    f"KID subset size shrunk from {self.kid_subset_size} to {subset} (real {num_real}, fake "
                    f"{num_fake} images): not comparable with KID on {self.kid_subset_size}-image subsets",
                    KIDSubsetWarning,
                    stacklevel=2,
                )
            if subset < 2:
                results["kid_mean"] = results["kid_std"] = math.nan
            else:
                self.kid.subset_size = subset
                with torch.random.fork_rng(devices=[]):  # subsets drawn from a fixed seed: reproducible
                    torch.manual_seed(self.seed)
                    kid_mean, kid_std = self.kid.compute()
                results["kid_mean"], results["kid_std"] = float(kid_mean), float(kid_std)
        return results


def build_image_metrics(
    extractor: str = "inception",
    inception_weights: str | Path | None = None,
    num_features: int = 64,
    extractor_seed: int = 0,
    input_size: int = 64,
    inception_feature: int = 2048,
    **kwargs: Any,
) -> ImageQualityMetrics:
    """Hydra entry point (``configs/metrics/*.yaml``): the extractor by kind, then the metric."""
    net = build_feature_extractor(
        extractor, inception_weights, num_features, extractor_seed, input_size, inception_feature
    )
    return ImageQualityMetrics(net, **kwargs)


# -- CLIP score ------------------------------------------------------------------------------------------------------
class ClipScore:
    """Mean of ``100 · max(cos(image, prompt), 0)`` (torchmetrics' definition) with an open_clip model.

    ``weights`` is a local open_clip checkpoint (safetensors or a plain state dict, e.g. the
    ``open_clip_model.safetensors`` of OpenAI's ViT-L/14 for ``model_name="ViT-L-14-quickgelu"``);
    open_clip reads it with ``weights_only=True``; nothing is downloaded.
    """

    def __init__(self, weights: str | Path, model_name: str = "ViT-L-14-quickgelu", device: str | None = None):
        import open_clip

        path = Path(weights)
        if not path.is_file():
            raise MetricWeightsError(
                f"CLIP weights not found: {path}. The CLIP score needs a local open_clip checkpoint for "
                f"{model_name} (e.g. OpenAI ViT-L/14's open_clip_model.safetensors); put it there or set clip_weights=PATH"
            )
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=str(path), device=self.device
        )
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.total = 0.0
        self.count = 0

    @torch.no_grad()
    def scores(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        from PIL import Image

        images = _check_uint8(images)
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(prompts)} prompts")
        pixels = torch.stack([
            self.preprocess(Image.fromarray(img.permute(1, 2, 0).cpu().numpy())) for img in images
        ]).to(self.device)
        image_emb = F.normalize(self.model.encode_image(pixels).float(), dim=-1)
        text_emb = F.normalize(self.model.encode_text(self.tokenizer(list(prompts)).to(self.device)).float(), dim=-1)
        return 100.0 * (image_emb * text_emb).sum(-1).clamp(min=0)

    def update(self, images: torch.Tensor, prompts: Sequence[str]) -> None:
        scores = self.scores(images, prompts)
        self.total += float(scores.sum())
        self.count += scores.numel()

    def compute(self) -> float:
        return self.total / self.count if self.count else math.nan

    def reset(self) -> None:
        self.total, self.count = 0.0, 0
