"""From a DETR-style HOI model's per-query scores to per-image HOI triplets (shared by QPIC and FGAHOI).

Both detectors predict, per query (or per selected (query, object class) pair), one object class, a human
box, an object box and a score per verb. A (verb, object) pair becomes an HOI class through the vocabulary's
validity table; pairs that are no HOI class are dropped (their official evaluators zero them), and the
``top_k`` best remain per image.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...vocab import HOIVocabulary
from .base import ImageDetections


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_vocabulary(vocabulary: HOIVocabulary | str | Path) -> HOIVocabulary:
    return vocabulary if isinstance(vocabulary, HOIVocabulary) else HOIVocabulary.load(vocabulary)


def hoi_lookup_table(vocabulary: HOIVocabulary, num_obj_classes: int, object_space: str = "coco80") -> torch.Tensor:
    """Long [num_verbs, num_obj_classes]: the HOI id of (verb, detector object class), -1 when not a class.

    ``object_space="coco80"``: detector classes are COCO-80 contiguous (QPIC); objects the vocabulary
    lacks map to -1. ``"vocabulary"``: detector classes are the vocabulary's own objects (random models).
    """
    table = vocabulary.hoi_table()
    if object_space == "coco80":
        if num_obj_classes != 80:
            raise ValueError(f"a COCO-80 detector must have 80 object classes, not {num_obj_classes}")
        columns = []
        for index in range(80):
            try:
                columns.append(vocabulary.coco80_to_object(index))
            except KeyError:
                columns.append(-1)
    elif object_space == "vocabulary":
        if num_obj_classes != vocabulary.num_objects:
            raise ValueError(
                f"detector has {num_obj_classes} object classes, the vocabulary {vocabulary.num_objects}"
            )
        columns = list(range(num_obj_classes))
    else:
        raise ValueError(f"object_space must be 'coco80' or 'vocabulary', not {object_space!r}")
    lookup = torch.full((vocabulary.num_verbs, num_obj_classes), -1, dtype=torch.long)
    for cls, obj in enumerate(columns):
        if obj >= 0:
            lookup[:, cls] = torch.from_numpy(table[:, obj])
    return lookup


def select_triplets(
    verb_scores: torch.Tensor,
    obj_labels: torch.Tensor,
    human_xyxy: torch.Tensor,
    object_xyxy: torch.Tensor,
    hoi_lookup: torch.Tensor,
    top_k: int | None = 100,
) -> list[ImageDetections]:
    """Per image the ``top_k`` best valid (candidate, verb) triplets, best first.

    ``verb_scores`` [B, N, V], ``obj_labels`` [B, N] (detector classes), boxes [B, N, 4] in output pixels.
    Ties keep candidate-major, verb-minor order (a stable sort), as the reference evaluators' stable sorts do.
    """
    hoi_ids = hoi_lookup.T[obj_labels]  # [B, N, V]
    results = []
    for b in range(verb_scores.shape[0]):
        query, verb = (hoi_ids[b] >= 0).nonzero(as_tuple=True)
        scores = verb_scores[b, query, verb]
        order = torch.sort(scores, descending=True, stable=True).indices
        if top_k is not None:
            order = order[:top_k]
        query, verb = query[order], verb[order]
        results.append(ImageDetections(
            hoi_ids[b, query, verb].numpy(), human_xyxy[b, query].double().numpy(),
            object_xyxy[b, query].double().numpy(), scores[order].double().numpy(),
        ))
    return results
