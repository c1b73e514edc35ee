"""The grounding tokens of a call: the interaction tokenizer run once on the scenes, once on the null input.

Functions of the pipeline (``pipe``: its UNet's ``position_net``, phrase encoder and phrase index), which
``InteractDiffusionPipeline.grounding_tokens`` / ``null_grounding_tokens`` delegate to.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..conditioning import grounding_kwargs, null_grounding_kwargs, scenes_to_ids
from ..scene import MAX_INTERACTIONS, Scene


def grounding_tokens(pipe, scenes: Sequence[Scene], device) -> torch.Tensor:
    """The tokenizer's output for a batch of scenes ([B, tokens, D]), computed once per call."""
    position_net = pipe.unet.position_net
    dim = pipe.phrase_encoder.dim
    if getattr(position_net, "positive_len", dim) != dim:
        raise ValueError(
            f"the grounding tokenizer takes {position_net.positive_len}-d phrase embeddings but the text "
            f"encoder gives {dim}-d ones: the adapter does not belong to this backbone"
        )
    max_n = getattr(position_net, "max_interactions", MAX_INTERACTIONS)
    ids = scenes_to_ids(scenes, pipe.phrase_index, max_interactions=max_n)
    if len(pipe.phrase_index):
        table = pipe.phrase_encoder(pipe.phrase_index.phrases)
    else:
        table = torch.zeros(1, dim)
    kwargs = grounding_kwargs(ids, table.to(device), dtype=pipe.unet.dtype)
    return position_net(**kwargs)


def null_grounding_tokens(pipe, batch_size: int, device) -> torch.Tensor:
    """Tokens of the "no grounding" input (masks 0): the unconditional branch of guidance."""
    position_net = pipe.unet.position_net
    max_n = getattr(position_net, "max_interactions", MAX_INTERACTIONS)
    kwargs = null_grounding_kwargs(
        batch_size, pipe.phrase_encoder.dim, max_n, device=device, dtype=pipe.unet.dtype
    )
    return position_net(**kwargs)
