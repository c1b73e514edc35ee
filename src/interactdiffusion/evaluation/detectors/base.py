"""The detector interface: everything the evaluator needs from an HOI detector, nothing more.

A detector takes a batch of images and returns, per image, human-object-interaction triplets in
continuous 0-based pixels of the *original* image size. QPIC, FGAHOI or the analytic HOI-Shapes
detector implement it; the evaluator and the eval command only see this interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class HOIDetection:
    human_box: Box
    object_box: Box
    hoi: int  # 0..num_classes-1 in the vocabulary's official order
    score: float


@runtime_checkable
class HOIDetector(Protocol):
    """``images``: uint8 [B, 3, H, W] (RGB) or a list of such [3, H, W] tensors of varying size.

    ``sizes``: the original (width, height) each image's detections must be scaled to (a generated
    512² image of a 640×480 test layout is scored in 640×480 pixels, or in 512² when the GT is
    rescaled instead; the caller decides).
    """

    name: str

    def detect(
        self, images: torch.Tensor | Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]]
    ) -> list[list[HOIDetection]]: ...
