"""SDXL's two text encoders as one conditioning source: caption tokens, pooled caption, phrase vectors.

SDXL conditions its UNet on the penultimate hidden states of CLIP ViT-L and OpenCLIP bigG side by side
(768 + 1280 = 2048 channels) and, through ``added_cond_kwargs``, on bigG's projected pooled caption
(``text_embeds``) and six size numbers (``time_ids``). InteractDiffusion-XL embeds a phrase as CLIP-L's
``pooler_output`` beside bigG's ``text_embeds`` (REFERENCE §9): 2048-d, not normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from .backbone import PhraseEncoder


def _token_ids(tokenizer: CLIPTokenizer, texts: Sequence[str], device) -> torch.Tensor:
    """Every text padded (and truncated) to the tokenizer's 77 positions, as both SDXL scripts do."""
    return tokenizer(
        list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


class DualTextEncoder:
    """CLIP-L (``text_encoder``) and bigG with projection (``text_encoder_2``) with their tokenizers."""

    def __init__(
        self,
        text_encoder: CLIPTextModel,
        text_encoder_2: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        tokenizer_2: CLIPTokenizer,
    ):
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2
        self.tokenizer = tokenizer
        self.tokenizer_2 = tokenizer_2

    @property
    def hidden_dim(self) -> int:
        """Channels of the caption tokens (the UNet's ``cross_attention_dim``)."""
        return int(self.text_encoder.config.hidden_size + self.text_encoder_2.config.hidden_size)

    @property
    def pooled_dim(self) -> int:
        return int(self.text_encoder_2.config.projection_dim)

    @property
    def phrase_dim(self) -> int:
        return int(self.text_encoder.config.hidden_size + self.text_encoder_2.config.projection_dim)

    @torch.no_grad()
    def encode_prompt(self, captions: Sequence[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens [B, 77, hidden_dim], pooled [B, pooled_dim]): penultimate layers, unnormed, as SDXL."""
        device = device or self.text_encoder.device
        out_1 = self.text_encoder(_token_ids(self.tokenizer, captions, device), output_hidden_states=True)
        out_2 = self.text_encoder_2(_token_ids(self.tokenizer_2, captions, device), output_hidden_states=True)
        tokens = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)
        return tokens, out_2.text_embeds

    @torch.no_grad()
    def encode_phrases(self, phrases: Sequence[str], device=None) -> torch.Tensor:
        """[P, phrase_dim]: CLIP-L ``pooler_output`` ⊕ bigG ``text_embeds``, each phrase padded to 77."""
        device = device or self.text_encoder.device
        pooled_1 = self.text_encoder(_token_ids(self.tokenizer, phrases, device)).pooler_output
        pooled_2 = self.text_encoder_2(_token_ids(self.tokenizer_2, phrases, device)).text_embeds
        return torch.cat([pooled_1, pooled_2], dim=-1)


class DualPhraseEncoder(PhraseEncoder):
    """``PhraseEncoder`` (batched, memoised, cache-seeded) over both SDXL text encoders.

    ``text_encoder`` is both encoders in one container: what the on-disk phrase cache fingerprints, so
    a table is reused only with the same CLIP-L *and* the same bigG.
    """

    def __init__(self, encoders: DualTextEncoder, batch_size: int = 64):
        both = nn.ModuleDict({"text_encoder": encoders.text_encoder, "text_encoder_2": encoders.text_encoder_2})
        super().__init__(both, encoders.tokenizer, batch_size)
        self.encoders = encoders

    @property
    def dim(self) -> int:
        return self.encoders.phrase_dim

    def _encode(self, phrases: list[str]) -> torch.Tensor:
        chunks = [
            self.encoders.encode_phrases(phrases[start : start + self.batch_size]).float().cpu()
            for start in range(0, len(phrases), self.batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.dim)


def default_time_ids(batch_size: int, height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[B, 6] for uncropped images already at the target size: (H, W, 0, 0, H, W)."""
    row = torch.tensor([height, width, 0, 0, height, width], dtype=dtype, device=device)
    return row.expand(batch_size, 6).clone()
