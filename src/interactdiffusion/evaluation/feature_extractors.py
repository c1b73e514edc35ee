"""The image feature extractors behind FID/KID: torch-fidelity's Inception (through torchmetrics) and a tiny one.

- ``InceptionFeatures`` is torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's "inception-v3-compat",
  2048-d pool features) built from a local weights file with ``antialias=False``, i.e. torch-fidelity's
  TF1-compatible resize, so numbers match torch-fidelity and the paper's table (REFERENCE §7).
- ``TinyFeatureExtractor`` is a small seeded random conv net for tests and the tiny profile.
- Each carries ``num_features`` and an ``identity`` string (what keys the reference-feature cache).
- Nothing downloads: a missing weights file is an error that names the file and where it goes.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
)


class MetricWeightsError(FileNotFoundError):
    """A metric network's weights file that is missing or unusable; the message says what to put where."""


# -- feature extractors ----------------------------------------------------------------------------------
class InceptionFeatures(nn.Module):
    """torch-fidelity's Inception-v3 (through torchmetrics) as a uint8 → [B, 2048] feature extractor."""

    def __init__(self, weights_path: str | Path, feature: int = 2048, antialias: bool = False):
        super().__init__()
        path = Path(weights_path)
        if not path.is_file():
            raise MetricWeightsError(
                f"Inception weights not found: {path}. FID/KID need torch-fidelity's {INCEPTION_WEIGHTS_FILE} "
                f"({INCEPTION_WEIGHTS_URL}); put it there or set the metrics' inception_weights=PATH"
            )
        try:  # torch-fidelity reads the file with a full unpickler; make sure it holds tensors only
            torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
            raise MetricWeightsError(f"{path} is not a plain Inception state dict ({INCEPTION_WEIGHTS_FILE}): {err}") from None
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(feature)],
            feature_extractor_weights_path=str(path),
            antialias=antialias,
        )
        self.num_features = feature
        resize = "antialias" if antialias else "tf1-bilinear"
        self.identity = f"inception-v3-compat/{feature}/{path.name}/{path.stat().st_size}/{resize}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class TinyFeatureExtractor(nn.Module):
    """A small random conv net (fixed by ``seed``) with ``num_features`` outputs, for tests and tiny runs.

    Same contract as the Inception extractor: uint8 RGB in (any size, resized to ``input_size``),
    float features out. Its numbers mean nothing; its plumbing is the real one.
    """

    def __init__(self, num_features: int = 64, seed: int = 0, input_size: int = 64, width: int = 16):
        super().__init__()
        self.num_features = num_features
        self.input_size = input_size
        self.identity = f"tiny-conv/{num_features}/{width}/{input_size}/seed{seed}"
        self.convs = nn.ModuleList([
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.Conv2d(2 * width, num_features, 3, stride=2, padding=1),
        ])
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in self.convs:
                fan_in = conv.weight[0].numel()
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.1)
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}")
        x = images.float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = (x - 128.0) / 128.0
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x.mean(dim=(2, 3))


def build_feature_extractor(
    kind: str = "inception",
    inception_weights: str | Path | None = None,
    num_features: int = 64,
    seed: int = 0,
    input_size: int = 64,
    inception_feature: int = 2048,
) -> nn.Module:
    """``inception`` (needs ``inception_weights``; ``inception_feature`` 2048 for the paper's numbers) or
    ``tiny`` (``num_features``, ``seed``, ``input_size``)."""
    if kind == "inception":
        if inception_weights is None:
            raise MetricWeightsError(
                f"FID/KID need the Inception weights {INCEPTION_WEIGHTS_FILE} ({INCEPTION_WEIGHTS_URL}): "
                "set inception_weights=PATH"
            )
        return InceptionFeatures(inception_weights, feature=inception_feature)
    if kind == "tiny":
        return TinyFeatureExtractor(num_features=num_features, seed=seed, input_size=input_size)
    raise ValueError(f"unknown feature extractor {kind!r}; choose 'inception' or 'tiny'")
