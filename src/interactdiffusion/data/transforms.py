"""From an annotated image to a training sample: the paper's recipe (REFERENCE §2).

Shorter side → ``resolution``, center crop ``resolution``², optional horizontal flip. Boxes follow the
image exactly (the same affine map, using the per-axis scale of the actually resized image), are
clamped to the crop, dropped when their area is under ``min_box_fraction`` (0.1 %) of the crop, and a
pair is kept only when both boxes survive. Pairs are sorted by subject + object area, **largest first**,
and at most ``max_interactions`` (30) are kept: the official dataset sorts descending before truncating,
so when an image has more pairs than slots the smallest (least visible, least learnable) ones go.
Boxes end normalised to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..scene import MAX_INTERACTIONS, Interaction, Scene, caption_from_interactions
from ..vocab import HOIVocabulary
from .boxes import Box
from .records import ImageRecord, PairRecord

MIN_BOX_FRACTION = 0.001
SUBJECT_PHRASE = "person"


@dataclass(frozen=True)
class CropGeometry:
    """Where the crop of one image lies: resize by (scale_x, scale_y), crop at (crop_x, crop_y), flip."""

    width: int
    height: int
    resolution: int
    scale_x: float
    scale_y: float
    crop_x: int
    crop_y: int
    flip: bool = False

    @classmethod
    def center(cls, width: int, height: int, resolution: int, flip: bool = False) -> CropGeometry:
        """Shorter side to ``resolution`` (the other side rounded), then the centred square."""
        scale = resolution / min(width, height)
        resized_w = max(resolution, round(width * scale))
        resized_h = max(resolution, round(height * scale))
        return cls(
            width=width,
            height=height,
            resolution=resolution,
            scale_x=resized_w / width,
            scale_y=resized_h / height,
            crop_x=(resized_w - resolution) // 2,
            crop_y=(resized_h - resolution) // 2,
            flip=flip,
        )

    def flipped(self, flip: bool) -> CropGeometry:
        return CropGeometry(self.width, self.height, self.resolution, self.scale_x, self.scale_y,
                            self.crop_x, self.crop_y, flip)

    def time_ids(self) -> tuple[int, int, int, int, int, int]:
        """SDXL's micro-conditioning of this crop, as the official XL trainer computes it (unflipped):
        original (H, W), crop top-left (y, x) in the resized image, target (H, W)."""
        return (self.height, self.width, self.crop_y, self.crop_x, self.resolution, self.resolution)

    def source_region(self) -> tuple[float, float, float, float]:
        """The region of the original image that becomes the crop (PIL ``resize(box=...)``)."""
        r = self.resolution
        return (
            self.crop_x / self.scale_x,
            self.crop_y / self.scale_y,
            (self.crop_x + r) / self.scale_x,
            (self.crop_y + r) / self.scale_y,
        )

    def map_box(self, box: Box) -> Box:
        """A box of the original image in crop pixels: resized, shifted, clamped, flipped."""
        r = float(self.resolution)
        x1 = min(max(box[0] * self.scale_x - self.crop_x, 0.0), r)
        y1 = min(max(box[1] * self.scale_y - self.crop_y, 0.0), r)
        x2 = min(max(box[2] * self.scale_x - self.crop_x, 0.0), r)
        y2 = min(max(box[3] * self.scale_y - self.crop_y, 0.0), r)
        if self.flip:
            x1, x2 = r - x2, r - x1
        return (x1, y1, x2, y2)


def keeps_box(box: Box, resolution: int, min_box_fraction: float = MIN_BOX_FRACTION) -> bool:
    """A crop-pixel box survives when non-empty and its area is at least the fraction of the crop."""
    width, height = box[2] - box[0], box[3] - box[1]
    if width <= 0 or height <= 0:
        return False
    return width * height >= min_box_fraction * resolution * resolution


@dataclass(frozen=True)
class KeptPair:
    pair: PairRecord
    subject_box: Box  # normalised [0, 1]
    object_box: Box


def pair_area(subject: Box, obj: Box) -> float:
    """The key pairs are ordered by, largest first (official training): subject area + object area.
    Slot i of the instance embedding is the i-th largest pair, in training and in generation."""
    return (subject[2] - subject[0]) * (subject[3] - subject[1]) + (obj[2] - obj[0]) * (obj[3] - obj[1])


def transform_pairs(
    pairs: list[PairRecord],
    geometry: CropGeometry,
    min_box_fraction: float = MIN_BOX_FRACTION,
    max_interactions: int = MAX_INTERACTIONS,
) -> list[KeptPair]:
    """The pairs that survive the crop, largest (subject + object area) first, at most ``max_interactions``."""
    r = float(geometry.resolution)
    kept = []
    for pair in pairs:
        subject = geometry.map_box(pair.human_box)
        obj = geometry.map_box(pair.object_box)
        if not (keeps_box(subject, geometry.resolution, min_box_fraction)
                and keeps_box(obj, geometry.resolution, min_box_fraction)):
            continue
        kept.append((pair_area(subject, obj), pair, tuple(v / r for v in subject), tuple(v / r for v in obj)))
    kept.sort(key=lambda item: -item[0])  # stable: equal areas keep annotation order
    return [KeptPair(p, s, o) for _, p, s, o in kept[:max_interactions]]


def interaction_of(pair: PairRecord, vocab: HOIVocabulary, subject_box: Box, object_box: Box) -> Interaction:
    return Interaction(SUBJECT_PHRASE, vocab.action_phrase(pair.verb), vocab.object_phrase(pair.object),
                       subject_box, object_box)


def scene_id_of(file_name: str) -> str:
    """``HICO_train2015_00000001.jpg`` → ``HICO_train2015_00000001`` (ids stay unique across splits)."""
    stem = file_name.rsplit("/", 1)[-1]
    return stem.rsplit(".", 1)[0] if "." in stem else stem


def training_scene(
    record: ImageRecord,
    vocab: HOIVocabulary,
    geometry: CropGeometry,
    min_box_fraction: float = MIN_BOX_FRACTION,
    max_interactions: int = MAX_INTERACTIONS,
) -> Scene:
    """The scene of one training crop; boxes refer to the ``resolution``² crop.

    The caption is built from the kept triplets (``Scene.caption``). When the crop keeps none although the
    image is annotated, the caption of its annotated triplets is set as the prompt, as the official data
    did (its captions were written before cropping), so the image is never paired with an empty caption.
    """
    kept = transform_pairs(record.pairs, geometry, min_box_fraction, max_interactions)
    interactions = tuple(interaction_of(k.pair, vocab, k.subject_box, k.object_box) for k in kept)
    prompt = None
    if not interactions and record.pairs:
        whole = (0.0, 0.0, 1.0, 1.0)
        prompt = caption_from_interactions(interaction_of(p, vocab, whole, whole) for p in record.pairs[:max_interactions])
    return Scene(
        id=scene_id_of(record.file_name),
        interactions=interactions,
        prompt=prompt,
        width=geometry.resolution,
        height=geometry.resolution,
        extra={"file_name": record.file_name, "flip": geometry.flip},
    )


def crop_image(image, geometry: CropGeometry):
    """The PIL image cropped and resized in one resampling step (bicubic), flipped when asked."""
    from PIL import Image

    r = geometry.resolution
    out = image.resize((r, r), resample=Image.BICUBIC, box=geometry.source_region(), reducing_gap=3.0)
    if geometry.flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return out


def to_tensor(image) -> torch.Tensor:
    """RGB PIL image → float CHW tensor in [-1, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float()
    return tensor.div_(127.5).sub_(1.0)
