"""Scenes → the tensors the grounding tokenizer takes (``cross_attention_kwargs["gligen"]``).

Shared by the datamodule's collate function, the training step and the pipeline, so training and
inference pad, mask and order interactions identically. Phrases travel as ids into a phrase table
(embedded once, cached) and become vectors only at the last moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .scene import MAX_INTERACTIONS, Scene

PAD_ID = -1
GROUNDING_KEYS = (
    "subject_boxes",
    "object_boxes",
    "masks",
    "subject_positive_embeddings",
    "object_positive_embeddings",
    "action_positive_embeddings",
)


@dataclass
class GroundingIds:
    """Padded boxes, masks and phrase ids of a batch of scenes ([B, N] / [B, N, 4])."""

    subject_boxes: torch.Tensor
    object_boxes: torch.Tensor
    masks: torch.Tensor
    subject_ids: torch.Tensor
    object_ids: torch.Tensor
    action_ids: torch.Tensor

    def to(self, device) -> GroundingIds:
        return GroundingIds(**{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class PhraseIndex:
    """A fixed list of phrases and their ids; unknown phrases are appended (generation of new words)."""

    def __init__(self, phrases: Sequence[str] = ()):
        self.phrases: list[str] = []
        self._ids: dict[str, int] = {}
        for p in phrases:
            self.add(p)

    def add(self, phrase: str) -> int:
        if phrase not in self._ids:
            self._ids[phrase] = len(self.phrases)
            self.phrases.append(phrase)
        return self._ids[phrase]

    def id(self, phrase: str) -> int:
        return self._ids[phrase]

    def __len__(self) -> int:
        return len(self.phrases)

    def __contains__(self, phrase: str) -> bool:
        return phrase in self._ids


def scenes_to_ids(
    scenes: Sequence[Scene], index: PhraseIndex, max_interactions: int = MAX_INTERACTIONS, grow: bool = True
) -> GroundingIds:
    """Pad a batch of scenes to ``max_interactions``; unseen phrases are added to ``index`` if ``grow``."""
    b, n = len(scenes), max_interactions
    subject_boxes = torch.zeros(b, n, 4)
    object_boxes = torch.zeros(b, n, 4)
    masks = torch.zeros(b, n)
    ids = torch.full((3, b, n), PAD_ID, dtype=torch.long)
    for i, scene in enumerate(scenes):
        if len(scene.interactions) > n:
            raise ValueError(f"scene {scene.id!r} has {len(scene.interactions)} interactions > {n}")
        for k, inter in enumerate(scene.interactions):
            subject_boxes[i, k] = torch.tensor(inter.subject_box)
            object_boxes[i, k] = torch.tensor(inter.object_box)
            masks[i, k] = 1.0
            for row, phrase in enumerate((inter.subject, inter.object, inter.action)):
                ids[row, i, k] = index.add(phrase) if grow else index.id(phrase)
    return GroundingIds(subject_boxes, object_boxes, masks, ids[0], ids[1], ids[2])


def lookup(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` for ``ids`` ([B, N] → [B, N, D]); padding ids give zero vectors."""
    safe = ids.clamp(min=0)
    vectors = table[safe]
    return vectors * (ids >= 0).unsqueeze(-1).to(vectors.dtype)


def grounding_kwargs(
    grounding: GroundingIds, table: torch.Tensor, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The keyword arguments of the tokenizer's forward, on ``table``'s device."""
    dtype = dtype or table.dtype
    device = table.device
    return {
        "subject_boxes": grounding.subject_boxes.to(device, dtype),
        "object_boxes": grounding.object_boxes.to(device, dtype),
        "masks": grounding.masks.to(device, dtype),
        "subject_positive_embeddings": lookup(table, grounding.subject_ids.to(device)).to(dtype),
        "object_positive_embeddings": lookup(table, grounding.object_ids.to(device)).to(dtype),
        "action_positive_embeddings": lookup(table, grounding.action_ids.to(device)).to(dtype),
    }


def null_grounding_kwargs(
    batch_size: int, dim: int, max_interactions: int = MAX_INTERACTIONS, device=None, dtype=torch.float32
) -> dict[str, torch.Tensor]:
    """The "no grounding" input (masks 0, boxes 0, embeddings 0): the tokenizer sees only its nulls."""
    zeros_boxes = torch.zeros(batch_size, max_interactions, 4, device=device, dtype=dtype)
    zeros_text = torch.zeros(batch_size, max_interactions, dim, device=device, dtype=dtype)
    return {
        "subject_boxes": zeros_boxes,
        "object_boxes": zeros_boxes.clone(),
        "masks": torch.zeros(batch_size, max_interactions, device=device, dtype=dtype),
        "subject_positive_embeddings": zeros_text,
        "object_positive_embeddings": zeros_text.clone(),
        "action_positive_embeddings": zeros_text.clone(),
    }


def drop_grounding(kwargs: dict[str, torch.Tensor], drop: torch.Tensor) -> dict[str, torch.Tensor]:
    """Replace the grounding of samples where ``drop`` [B] is true by the null input."""
    keep = (~drop).to(kwargs["masks"].dtype)
    out = {}
    for key, value in kwargs.items():
        shape = (-1,) + (1,) * (value.dim() - 1)
        out[key] = value * keep.view(shape)
    return out
