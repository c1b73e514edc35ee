"""Layouts for generation and evaluation: one ``Scene`` per annotated test image.

Boxes are normalised by the image's **original** width and height (the generated square image is the
original squashed, as in the paper's protocol), and ``extra`` keeps what the evaluator needs to rescale
the ground truth to any output size: ``file_name``, ``original_width``/``original_height`` and every
visible GT pair in original pixels with its HOI, verb and object ids.

GT boxes are continuous 0-based xyxy pixels (``gt_box_convention``); the 1-based inclusive values of the
HICO-DET files are ``(x1 + 1, y1 + 1, x2, y2)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..scene import MAX_INTERACTIONS, Scene
from ..vocab import HOIVocabulary
from .records import ImageRecord
from .transforms import interaction_of, pair_area, scene_id_of

GT_BOX_CONVENTION = "continuous 0-based xyxy pixels of the original image; 1-based inclusive = (x1+1, y1+1, x2, y2)"


def layout_scene(
    record: ImageRecord, vocab: HOIVocabulary, resolution: int = 512, max_interactions: int = MAX_INTERACTIONS
) -> Scene | None:
    """The layout of one image (``None`` without visible pairs): its pairs largest first (subject + object
    area, ties in annotation order), at most ``max_interactions``, ordered as training orders them so that
    slot i of the instance embedding means the same in training and generation."""
    if not record.pairs:
        return None
    w, h = float(record.width), float(record.height)

    def normalised(box):
        return (box[0] / w, box[1] / h, box[2] / w, box[3] / h)

    # Squashing scales every area by the same 512²/(W·H): the order in original pixels is the order at 512².
    chosen = sorted(record.pairs, key=lambda p: -pair_area(p.human_box, p.object_box))[:max_interactions]
    interactions = tuple(
        interaction_of(p, vocab, normalised(p.human_box), normalised(p.object_box)) for p in chosen
    )
    extra = {
        "file_name": record.file_name,
        "original_width": record.width,
        "original_height": record.height,
        "gt_box_convention": GT_BOX_CONVENTION,
        "gt_pairs": [
            {"hoi": p.hoi, "verb": p.verb, "object": p.object,
             "human_box": list(p.human_box), "object_box": list(p.object_box)}
            for p in record.pairs
        ],
    }
    return Scene(id=scene_id_of(record.file_name), interactions=interactions, width=resolution, height=resolution,
                 extra=extra)


def layout_scenes(
    records: Sequence[ImageRecord], vocab: HOIVocabulary, resolution: int = 512, max_interactions: int = MAX_INTERACTIONS
) -> Iterator[Scene]:
    for record in records:
        scene = layout_scene(record, vocab, resolution, max_interactions)
        if scene is not None:
            yield scene
