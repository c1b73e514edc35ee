"""Phrase embeddings: the memoised pooled-CLIP ``PhraseEncoder`` and the weight fingerprint that keys caches.

``models.backbone`` re-exports both (``Backbone.phrase_encoder()`` builds a ``PhraseEncoder``).
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer


def module_fingerprint(module: nn.Module) -> str:
    """A cheap identity of a module's weights: names, shapes, sums and a strided sample per tensor.

    Used to key on-disk caches (phrase embeddings, latents) so a different encoder never reuses them.
    Weights only: the same model saved and reloaded (new library version, new config metadata) keeps
    its identity.
    """
    digest = hashlib.sha1()
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1).float()
            step = max(1, flat.numel() // 64)
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(flat[::step].cpu().numpy().tobytes())
            digest.update(repr(float(flat.double().sum())).encode())
    return digest.hexdigest()[:16]


class PhraseEncoder:
    """Pooled CLIP embeddings of short phrases ("person", "riding"), batched and memoised.

    The vector is the text model's ``pooler_output``: the final-layer-normed hidden state at the EOS
    token, before ``text_projection`` and not normalised (REFERENCE §1).
    """

    def __init__(self, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, batch_size: int = 64):
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def dim(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    @torch.no_grad()
    def _encode(self, phrases: list[str]) -> torch.Tensor:
        device = next(self.text_encoder.parameters()).device
        out = []
        for start in range(0, len(phrases), self.batch_size):
            chunk = phrases[start : start + self.batch_size]
            ids = self.tokenizer(
                chunk, padding="max_length", max_length=self.tokenizer.model_max_length,
                truncation=True, return_tensors="pt",
            ).input_ids.to(device)
            out.append(self.text_encoder(ids).pooler_output.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def __call__(self, phrases: list[str]) -> torch.Tensor:
        """Embeddings [len(phrases), dim] (float32, CPU); each distinct phrase is encoded once."""
        todo = list(dict.fromkeys(p for p in phrases if p not in self._cache))
        if todo:
            for phrase, vector in zip(todo, self._encode(todo)):
                self._cache[phrase] = vector
        if not phrases:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[p] for p in phrases])

    def preload(self, table: dict[str, torch.Tensor]) -> None:
        """Seed the memo from an on-disk cache so no phrase is re-encoded."""
        self._cache.update({k: v.float().cpu() for k, v in table.items()})

    def table(self) -> dict[str, torch.Tensor]:
        return dict(self._cache)
