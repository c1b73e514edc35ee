"""Multi-scale deformable attention (Zhu et al., ICLR 2021) in plain PyTorch: ``grid_sample``, no extension.

Each query attends to ``n_points`` bilinearly sampled locations per head and feature level around its
reference point; the samples are mixed with softmax weights. ``ms_deform_attn`` does one ``grid_sample``
per level over all heads at once, reading every query's points as one row, and accumulates the weighted
levels, so the [.., levels·points] stack of sampled values that the textbook form builds never exists. It runs on the CPU
and on any GPU without a build step.

``MSDeformAttn`` carries Deformable DETR's parameter names (``sampling_offsets``, ``attention_weights``,
``value_proj``, ``output_proj``). FGAHOI's decoder variant (fine-grained query update before the offsets
are predicted) subclasses it in ``anchors.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SpatialShapes = Sequence[tuple[int, int]]


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """``value`` [B, S, M, D] (levels flattened row-major, in ``spatial_shapes`` order),
    ``sampling_locations`` [B, Q, M, L, P, 2] as (x, y) in [0, 1] of each level (align_corners=False),
    ``attention_weights`` [B, Q, M, L, P] → [B, Q, M·D]. Out-of-map samples read zeros."""
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    # [B·M, L, 1, Q·P, 2]: one row of Q·P samples per level, so grid_sample writes them contiguously
    grids = (2 * sampling_locations - 1).permute(0, 2, 3, 1, 4, 5).reshape(batch * heads, levels, 1, -1, 2)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels, points)
    out, start = None, 0
    for level, (h, w) in enumerate(spatial_shapes):
        v = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(batch * heads, dim, h, w)
        start += h * w
        sampled = F.grid_sample(v, grids[:, level], mode="bilinear", padding_mode="zeros", align_corners=False)
        level_out = (sampled.view(batch * heads, dim, queries, points) * weights[:, :, :, level]).sum(-1)
        out = level_out if out is None else out + level_out
    return out.view(batch, heads * dim, queries).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Deformable attention from ``query`` [B, Q, C] around ``reference_points`` [B, Q, L, 2] into the
    flattened multi-level ``input_flatten`` [B, S, C] (``padding_mask`` [B, S] True on padding)."""

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)

    def refine_query(self, query, reference_points, input_flatten, spatial_shapes: SpatialShapes):
        """Hook for variants that update the query from the features before predicting offsets."""
        return query

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: SpatialShapes,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, queries, _ = query.shape
        value = self.value_proj(input_flatten)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(batch, -1, self.n_heads, self.d_model // self.n_heads)
        query = self.refine_query(query, reference_points, input_flatten, spatial_shapes)
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        offsets = self.sampling_offsets(query).view(batch, queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, queries, heads, levels, points)
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn(value, spatial_shapes, locations, weights))
