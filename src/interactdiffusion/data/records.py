"""Parsed annotations: one record per image, the same whatever file format it came from.

Boxes are continuous 0-based xyxy pixels of the original image (converted once, in the parser).
Object ids are in the vocabulary's internal (HICO alphabetical) index space.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PairRecord:
    """One visible ground-truth human-object pair of an HOI class."""

    human_box: Box
    object_box: Box
    hoi: int  # 0..num_classes-1, official order
    verb: int  # 0..num_verbs-1
    object: int  # internal object index


@dataclass
class ImageRecord:
    """One annotated image; ``pairs`` holds visible pairs only (``invis`` HOIs are skipped)."""

    file_name: str
    width: int
    height: int
    pairs: list[PairRecord] = field(default_factory=list)

    @property
    def has_pairs(self) -> bool:
        """False for images kept in the index although no visible pair survives."""
        return bool(self.pairs)
