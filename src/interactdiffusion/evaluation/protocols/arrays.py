"""Ground truth and detections as flat numpy columns: the form every protocol step works on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...data.records import ImageRecord
from ..detectors.base import HOIDetection, ImageDetections, as_image_detections
from .boxes import continuous_to_pixel_index


@dataclass(frozen=True)
class DetectionArrays:
    """Detections of a whole test set, one row each.

    ``image`` indexes the ground-truth records; boxes are continuous 0-based xyxy pixels of the GT
    image. The row order is the input order, which decides between equal scores (after the image
    order: ties are broken by image, then by row, for every protocol).
    """

    image: np.ndarray  # int64 [N]
    hoi: np.ndarray  # int64 [N]
    human_boxes: np.ndarray  # float64 [N, 4]
    object_boxes: np.ndarray  # float64 [N, 4]
    scores: np.ndarray  # float64 [N]

    def __post_init__(self):
        n = len(self.scores)
        object.__setattr__(self, "image", np.asarray(self.image, dtype=np.int64).reshape(n))
        object.__setattr__(self, "hoi", np.asarray(self.hoi, dtype=np.int64).reshape(n))
        object.__setattr__(self, "human_boxes", np.asarray(self.human_boxes, dtype=np.float64).reshape(n, 4))
        object.__setattr__(self, "object_boxes", np.asarray(self.object_boxes, dtype=np.float64).reshape(n, 4))
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float64).reshape(n))

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> DetectionArrays:
        return cls(np.zeros(0), np.zeros(0), np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0))

    @classmethod
    def from_per_image(cls, detections: Sequence[ImageDetections | Sequence[HOIDetection]]) -> DetectionArrays:
        """From one :class:`ImageDetections` (or list of :class:`HOIDetection`) per GT record: what a
        detector returns."""
        per_image = [as_image_detections(d) for d in detections]
        counts = [len(d) for d in per_image]
        if not sum(counts):
            return cls.empty()
        return cls(
            image=np.repeat(np.arange(len(per_image), dtype=np.int64), counts),
            hoi=np.concatenate([d.hoi for d in per_image]),
            human_boxes=np.concatenate([d.human_boxes for d in per_image]),
            object_boxes=np.concatenate([d.object_boxes for d in per_image]),
            scores=np.concatenate([d.scores for d in per_image]),
        )

    def take(self, index: np.ndarray) -> DetectionArrays:
        return DetectionArrays(
            self.image[index], self.hoi[index], self.human_boxes[index], self.object_boxes[index], self.scores[index]
        )

    def validate(self, num_images: int, num_classes: int) -> None:
        """Clear errors instead of silently wrong numbers."""
        if len(self) == 0:
            return
        if self.image.min() < 0 or self.image.max() >= num_images:
            bad = int(np.flatnonzero((self.image < 0) | (self.image >= num_images))[0])
            raise ValueError(f"detection {bad}: image index {self.image[bad]} outside 0..{num_images - 1}")
        if self.hoi.min() < 0 or self.hoi.max() >= num_classes:
            bad = int(np.flatnonzero((self.hoi < 0) | (self.hoi >= num_classes))[0])
            raise ValueError(f"detection {bad}: hoi {self.hoi[bad]} outside 0..{num_classes - 1}")
        for name, values in (("score", self.scores), ("human_box", self.human_boxes), ("object_box", self.object_boxes)):
            finite = np.isfinite(values) if values.ndim == 1 else np.isfinite(values).all(axis=1)
            if not finite.all():
                bad = int(np.flatnonzero(~finite)[0])
                raise ValueError(f"detection {bad}: {name} is not finite")


@dataclass(frozen=True)
class GroundTruthArrays:
    """Visible GT pairs of all images, sorted by (image, hoi) with the annotation order kept inside.

    Boxes are 0-based inclusive pixel indices (see ``boxes.py``); each protocol derives its own
    coordinates from them.
    """

    file_names: tuple[str, ...]
    image: np.ndarray  # int64 [G]
    hoi: np.ndarray  # int64 [G]
    object: np.ndarray  # int64 [G] internal object index
    human_index: np.ndarray  # float64 [G, 4]
    object_index: np.ndarray  # float64 [G, 4]
    num_classes: int

    @property
    def num_images(self) -> int:
        return len(self.file_names)

    @property
    def keys(self) -> np.ndarray:
        return self.image * self.num_classes + self.hoi

    @classmethod
    def from_records(cls, records: Sequence[ImageRecord], num_classes: int) -> GroundTruthArrays:
        image, hoi, obj, human, objects = [], [], [], [], []
        for k, record in enumerate(records):
            for pair in record.pairs:
                if not 0 <= pair.hoi < num_classes:
                    raise ValueError(f"{record.file_name}: GT pair with hoi {pair.hoi} outside 0..{num_classes - 1}")
                image.append(k)
                hoi.append(pair.hoi)
                obj.append(pair.object)
                human.append(pair.human_box)
                objects.append(pair.object_box)
        image_a = np.asarray(image, dtype=np.int64)
        hoi_a = np.asarray(hoi, dtype=np.int64)
        order = np.argsort(image_a * num_classes + hoi_a, kind="stable")
        return cls(
            file_names=tuple(r.file_name for r in records),
            image=image_a[order],
            hoi=hoi_a[order],
            object=np.asarray(obj, dtype=np.int64)[order],
            human_index=continuous_to_pixel_index(np.asarray(human, dtype=np.float64).reshape(-1, 4))[order],
            object_index=continuous_to_pixel_index(np.asarray(objects, dtype=np.float64).reshape(-1, 4))[order],
            num_classes=num_classes,
        )
