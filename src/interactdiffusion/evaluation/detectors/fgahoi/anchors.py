"""FGAHOI's decoder cross-attention: fine-grained anchors update the query before deformable attention.

Three parts, switched on by FGAHOI's flags (``--merge``, ``--hierarchical_merge``, ``--task_merge``):

- **MSS** (multi-scale sampling, ``merge``): around each query's reference point, an s×s grid of samples
  per level (s = ``scale[level]``, e.g. 1, 3, 5) is read with ``grid_sample`` from the encoder memory.
  Reproduced exactly as FGAHOI does it: the grid is centred on ``2·ref − 1`` and its x step is
  ``2 / H_level`` while its y step is ``2 / W_level`` (height and width swapped), samples ordered x-major.
- **HSAM** (hierarchical spatial-aware merging, ``hierarchical_merge``): per level, the query attends over
  its samples (``multi_attn_spatial`` fed by ``q_spital``/``kv_spital``); then over the per-level results
  (``multi_attn_scale`` fed by ``q_scale``/``kv_scale``). Off: plain means.
- **TAM** (task-aware merging, ``task_merge``): the query attends over {query, merged feature}
  (``multi_attn_task``), ``fcV2`` turns that into two affine maps whose parameters are L2-normalised over
  the *query* dimension (FGAHOI's ``F.normalize`` default ``dim=1``), and the query gains the max of the two
  maps of the merged feature. Off: the merged feature is added.
- ``base`` (FGAHOI's first training stage): the query gains the mean sample of every level.

``norm_spatial``, ``norm_scale`` and ``norm_task`` exist in FGAHOI's checkpoints but not in its forward;
they are kept so those checkpoints load strictly. Attention dropout is inference-off.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .deformable_attention import MSDeformAttn, SpatialShapes


def _attend(attn: nn.MultiheadAttention, q_proj: nn.Linear, kv_proj: nn.Linear, query, tokens) -> torch.Tensor:
    """``query`` [B, N, C] attends over ``tokens`` [B, N, P, C] → [B, N, C]."""
    b, n, p, c = tokens.shape
    q = q_proj(query).reshape(b * n, 1, c)
    kv = kv_proj(tokens).reshape(b * n, p, 2, c)
    out = attn(q, kv[:, :, 0], kv[:, :, 1], need_weights=False)[0]
    return out.view(b, n, c)


def multi_scale_samples(
    reference_points: torch.Tensor, memory: torch.Tensor, spatial_shapes: SpatialShapes, scales: Sequence[int]
) -> list[torch.Tensor]:
    """Per level [B, N, s², C]: the memory around each query's reference point (MSS, quirks included)."""
    b, _, c = memory.shape
    samples, start = [], 0
    for level, (h, w) in enumerate(spatial_shapes):
        feature = memory[:, start : start + h * w].view(b, h, w, c).permute(0, 3, 1, 2)
        start += h * w
        s = int(scales[level])
        steps = torch.arange(s, device=memory.device, dtype=memory.dtype) - s // 2
        dx = steps * torch.tensor(2 / h, dtype=memory.dtype)  # FGAHOI: x steps by the height
        dy = steps * torch.tensor(2 / w, dtype=memory.dtype)  # and y by the width
        centre = 2 * reference_points[:, :, level, :] - 1  # [B, N, 2]
        grid = torch.stack(
            (
                (centre[..., 0, None, None] + dx[:, None]).expand(-1, -1, s, s),
                (centre[..., 1, None, None] + dy[None, :]).expand(-1, -1, s, s),
            ),
            dim=-1,
        ).flatten(2, 3)  # [B, N, s², 2], index i·s + j
        sampled = F.grid_sample(feature, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        samples.append(sampled.permute(0, 2, 3, 1))  # [B, N, s², C]
    return samples


class FineGrainedDeformAttn(MSDeformAttn):
    """``MSDeformAttn`` whose query is first updated by FGAHOI's MSS → HSAM → TAM (see the module doc)."""

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 3,
        n_heads: int = 8,
        n_points: int = 4,
        *,
        scales: Sequence[int] = (1, 3, 5),
        hierarchical_merge: bool = True,
        task_merge: bool = True,
        base: bool = False,
    ):
        super().__init__(d_model, n_levels, n_heads, n_points)
        if len(scales) < n_levels:
            raise ValueError(f"FGAHOI needs one sampling scale per level: {n_levels} levels, scales {list(scales)}")
        self.scales = tuple(int(s) for s in scales)
        self.hierarchical_merge = hierarchical_merge
        self.task_merge = task_merge
        self.base = base
        if hierarchical_merge:
            self.multi_attn_spatial = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
            self.q_spital = nn.Linear(d_model, d_model)
            self.kv_spital = nn.Linear(d_model, 2 * d_model)
            self.norm_spatial = nn.LayerNorm(d_model)
            self.multi_attn_scale = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
            self.q_scale = nn.Linear(d_model, d_model)
            self.kv_scale = nn.Linear(d_model, 2 * d_model)
            self.norm_scale = nn.LayerNorm(d_model)
        if task_merge:
            self.multi_attn_task = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
            self.q_task = nn.Linear(d_model, d_model)
            self.kv_task = nn.Linear(d_model, 2 * d_model)
            self.norm_task = nn.LayerNorm(d_model)
            self.fcV2 = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 4 * d_model))

    def refine_query(self, query, reference_points, input_flatten, spatial_shapes: SpatialShapes):
        samples = multi_scale_samples(reference_points, input_flatten, spatial_shapes, self.scales)
        if self.base:
            return query + sum(s.mean(dim=-2) / len(samples) for s in samples)
        if self.hierarchical_merge:
            per_level = [_attend(self.multi_attn_spatial, self.q_spital, self.kv_spital, query, s) for s in samples]
            merged = _attend(self.multi_attn_scale, self.q_scale, self.kv_scale, query, torch.stack(per_level, 2))
        else:
            merged = torch.stack([s.mean(dim=-2) for s in samples], 2).mean(dim=-2)
        if not self.task_merge:
            return query + merged
        return query + self.task_aware(query, merged)

    def task_aware(self, query: torch.Tensor, merged: torch.Tensor) -> torch.Tensor:
        """TAM: max of two affine maps of ``merged`` whose parameters come from the (query, merged) pair."""
        c = query.shape[-1]
        mixed = _attend(self.multi_attn_task, self.q_task, self.kv_task, query, torch.stack((query, merged), 2))
        params = F.normalize(self.fcV2(mixed), dim=1)  # over the queries, as FGAHOI does
        a1, b1, a2, b2 = torch.split(params, c, dim=2)
        return torch.maximum(merged * ((a1 - 0.5) * 2 + 1) + (b1 - 0.5), merged * ((a2 - 0.5) * 2) + (b2 - 0.5))
