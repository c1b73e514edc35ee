"""The detector interface: everything the evaluator needs from an HOI detector, nothing more.

A detector takes a batch of images and returns, per image, human-object-interaction triplets in
continuous 0-based pixels of the *original* image size. QPIC, FGAHOI or the analytic HOI-Shapes
detector implement it; the evaluator and the eval command only see this interface.

What ``detect`` returns per image: preferably an :class:`ImageDetections` (columns: ``hoi``,
``human_boxes``, ``object_boxes``, ``scores``; build it with ``ImageDetections(...)`` from a detector's
tensors, as QPIC does), else a list of :class:`HOIDetection`. Columns keep a full-scale evaluation
(~10^6 triplets) as a few arrays per image from the detector through ``detections.jsonl`` to the
evaluator's ``DetectionArrays``; an ``ImageDetections`` still reads as a sequence of ``HOIDetection``
(built on access) for code that wants objects. ``as_image_detections`` accepts either form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class HOIDetection:
    human_box: Box
    object_box: Box
    hoi: int  # 0..num_classes-1 in the vocabulary's official order
    score: float


class ImageDetections(Sequence[HOIDetection]):
    """One image's detections as columns: ``hoi`` int64 [n] (0-based, official order), ``human_boxes``
    and ``object_boxes`` float64 [n, 4] (continuous 0-based xyxy pixels), ``scores`` float64 [n]; the
    row order is the detector's. Indexing gives an :class:`HOIDetection` (a slice, an ``ImageDetections``)."""

    __slots__ = ("hoi", "human_boxes", "object_boxes", "scores")

    def __init__(self, hoi: Any, human_boxes: Any, object_boxes: Any, scores: Any):
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        n = len(scores)
        self.scores = scores
        self.hoi = np.asarray(hoi, dtype=np.int64).reshape(n)
        self.human_boxes = np.asarray(human_boxes, dtype=np.float64).reshape(n, 4)
        self.object_boxes = np.asarray(object_boxes, dtype=np.float64).reshape(n, 4)

    @classmethod
    def empty(cls) -> ImageDetections:
        return cls(np.zeros(0), np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0))

    @classmethod
    def from_list(cls, detections: Sequence[HOIDetection]) -> ImageDetections:
        if not detections:
            return cls.empty()
        return cls([d.hoi for d in detections], [d.human_box for d in detections],
                   [d.object_box for d in detections], [d.score for d in detections])

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ImageDetections(self.hoi[index], self.human_boxes[index], self.object_boxes[index],
                                   self.scores[index])
        return HOIDetection(tuple(self.human_boxes[index].tolist()), tuple(self.object_boxes[index].tolist()),
                            int(self.hoi[index]), float(self.scores[index]))

    def __iter__(self):
        return (self[k] for k in range(len(self)))

    def __eq__(self, other) -> bool:
        if isinstance(other, ImageDetections):
            return all(np.array_equal(getattr(self, name), getattr(other, name)) for name in self.__slots__)
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # mutable arrays

    def __repr__(self) -> str:
        return f"ImageDetections({len(self)} detections)"


def as_image_detections(detections: ImageDetections | Sequence[HOIDetection]) -> ImageDetections:
    """Either form a detector may return, as columns."""
    if isinstance(detections, ImageDetections):
        return detections
    return ImageDetections.from_list(list(detections))


@runtime_checkable
class HOIDetector(Protocol):
    """``images``: uint8 [B, 3, H, W] (RGB) or a list of such [3, H, W] tensors of varying size.

    ``sizes``: the original (width, height) each image's detections must be scaled to (a generated
    512² image of a 640×480 test layout is scored in 640×480 pixels, or in 512² when the GT is
    rescaled instead; the caller decides). Returns one :class:`ImageDetections` (or a list of
    :class:`HOIDetection`) per image.
    """

    name: str

    def detect(
        self, images: torch.Tensor | Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]]
    ) -> Sequence[ImageDetections | Sequence[HOIDetection]]: ...
