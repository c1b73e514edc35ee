"""Samples → a batch: stacked images or latents, captions, and the padded grounding ids.

Padding to 30 interactions and the masks come from ``conditioning.scenes_to_ids`` (shared with
training and inference). Phrase ids index the datamodule's ``PhraseIndex``; no text is encoded here, and
caption/grounding dropout is the training module's job.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..conditioning import PhraseIndex, scenes_to_ids
from ..scene import MAX_INTERACTIONS


class Collate:
    """Picklable collate function (DataLoader workers receive a copy of the phrase index)."""

    def __init__(self, phrase_index: PhraseIndex, max_interactions: int = MAX_INTERACTIONS):
        self.phrase_index = phrase_index
        self.max_interactions = max_interactions

    def __call__(self, samples: Sequence[dict]) -> dict:
        scenes = [s["scene"] for s in samples]
        batch = {
            "captions": [scene.caption for scene in scenes],
            "grounding": scenes_to_ids(scenes, self.phrase_index, self.max_interactions, grow=False),
            "has_interaction": torch.tensor([bool(scene.interactions) for scene in scenes], dtype=torch.bool),
            "scene_ids": [scene.id for scene in scenes],
        }
        if "pixel_values" in samples[0]:
            batch["pixel_values"] = torch.stack([s["pixel_values"] for s in samples])
        if "time_ids" in samples[0]:  # SDXL micro-conditioning (ignored by SD-1.x backbones)
            batch["time_ids"] = torch.stack([s["time_ids"] for s in samples])
        if "latent_mean" in samples[0]:
            batch["latent_mean"] = torch.stack([s["latent_mean"] for s in samples])
            batch["latent_std"] = torch.stack([s["latent_std"] for s in samples])
        return batch
