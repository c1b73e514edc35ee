"""An optional fuser that also tells the gated self-attention *where* each visual token is.

GLIGEN's gated self-attention (the InFormer) matches visual tokens against grounding tokens that
carry Fourier features of their boxes; the visual tokens carry no coordinates of their own, and SD's
deep 64×64 UNet is trusted to have encoded position in its features. A small backbone does not: on
the HOI-Shapes backbone a linear probe reads a token's (x, y) from the 8×8-level features with
R² ≤ 0.14 (0.6-0.8 at 4×4), so the fusers that would place a 4-pixel bar cannot tell cells apart.
``visual_positions: true`` (a ``model.grounding`` option, off by default and for every paper config)
adds to each visual token, inside the attention input only and after its layer norm, a learned
projection of the same Fourier features of its own cell box that the grounding tokens get of theirs.
(Added before the norm, the fresh projection was about 1/20 of the HOI-Shapes residual stream and
vanished in it.) The adapter's only new weights are ``fuser.position.{weight,bias}``; with the gates
at 0 a fresh adapter still leaves the UNet unchanged.
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention import GatedSelfAttentionDense
from diffusers.models.embeddings import get_fourier_embeds_from_boundingbox
from torch import nn

from .grounding import FOURIER_FREQS, POSITION_DIM


def cell_boxes(height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """[height*width, 4] normalised (x0, y0, x1, y1) of the grid cells, row-major like the tokens."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    boxes = torch.stack([xs / width, ys / height, (xs + 1) / width, (ys + 1) / height], dim=-1)
    return boxes.reshape(-1, 4).to(dtype or torch.float32)


class PositionalGatedSelfAttention(GatedSelfAttentionDense):
    """``GatedSelfAttentionDense`` whose visual tokens enter the attention with their cell's position."""

    def __init__(self, query_dim: int, context_dim: int, n_heads: int, d_head: int):
        super().__init__(query_dim, context_dim, n_heads, d_head)
        self.position = nn.Linear(POSITION_DIM, query_dim)
        self.sample_shape: tuple[int, int] | None = None  # (H, W) of the UNet input, set per forward

    def grid(self, num_tokens: int) -> tuple[int, int]:
        """(h, w) of this block's token grid: the input's aspect ratio at ``num_tokens`` cells."""
        height, width = self.sample_shape or (1, 1)
        h = max(1, round(math.sqrt(num_tokens * height / width)))
        w = num_tokens // h
        if h * w != num_tokens:
            raise ValueError(f"cannot lay {num_tokens} visual tokens on a grid of aspect {height}:{width}")
        return h, w

    def forward(self, x: torch.Tensor, objs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        n_visual = x.shape[1]
        h, w = self.grid(n_visual)
        boxes = cell_boxes(h, w, x.device, x.dtype).unsqueeze(0)
        where = self.position(get_fourier_embeds_from_boundingbox(FOURIER_FREQS, boxes))  # [1, N, C]
        # norm1 is per token, so normalising the two groups apart is GLIGEN's norm1 of their concatenation;
        # the position goes in after it, where the residual stream's scale cannot drown it.
        tokens = torch.cat([self.norm1(x) + where, self.norm1(self.linear(objs))], dim=1)
        x = x + self.alpha_attn.tanh() * self.attn(tokens)[:, :n_visual, :]
        x = x + self.alpha_dense.tanh() * self.ff(self.norm2(x))
        return x


def _swap(old: GatedSelfAttentionDense, positional: bool) -> GatedSelfAttentionDense:
    query_dim, context_dim = old.linear.out_features, old.linear.in_features
    heads = old.attn.heads
    cls = PositionalGatedSelfAttention if positional else GatedSelfAttentionDense
    new = cls(query_dim, context_dim, heads, old.attn.inner_dim // heads)
    new.load_state_dict(old.state_dict(), strict=False)  # the shared weights carry over
    new.enabled = old.enabled
    return new.to(device=old.alpha_attn.device, dtype=old.alpha_attn.dtype)


def _record_sample_shape(unet: nn.Module, args, kwargs) -> None:
    sample = args[0] if args else kwargs.get("sample")
    if sample is not None:
        for module in unet.modules():
            if isinstance(module, PositionalGatedSelfAttention):
                module.sample_shape = tuple(sample.shape[-2:])


def set_visual_positions(unet: nn.Module, enabled: bool) -> None:
    """Make every fuser of ``unet`` positional (or plain again), keeping the weights they share."""
    for block in unet.modules():
        fuser = getattr(block, "fuser", None)
        if isinstance(fuser, GatedSelfAttentionDense) and isinstance(fuser, PositionalGatedSelfAttention) != enabled:
            block.fuser = _swap(fuser, enabled)
    if enabled and not getattr(unet, "_visual_position_hook", None):
        unet._visual_position_hook = unet.register_forward_pre_hook(_record_sample_shape, with_kwargs=True)
