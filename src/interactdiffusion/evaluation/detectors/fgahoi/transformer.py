"""FGAHOI's deformable transformer (DAB-Deformable-DETR with ``use_dab`` off, one stage, no box refinement).

Parameter names follow FGAHOI's ``DeformableTransformer``: ``level_embed``, ``reference_points``,
``encoder.layers.N.{self_attn,norm1,linear1,linear2,norm2}`` and
``decoder.layers.N.{cross_attn,norm1,self_attn,norm2,linear1,linear2,norm3}`` (post-norm, ReLU, no final
decoder norm). The decoder's reference points are ``sigmoid(reference_points(query_pos))`` and stay fixed
across layers; the last layer's output is all the HOI heads read at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .anchors import FineGrainedDeformAttn
from .deformable_attention import MSDeformAttn, SpatialShapes


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes: SpatialShapes, padding_mask):
        src = self.norm1(src + self.self_attn(_with_pos(src, pos), reference_points, src, spatial_shapes, padding_mask))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int, cross_attn: MSDeformAttn):
        super().__init__()
        self.cross_attn = cross_attn
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt, query_pos, reference_points, memory, spatial_shapes: SpatialShapes, padding_mask):
        q = k = _with_pos(tgt, query_pos)
        tgt = self.norm2(tgt + self.self_attn(q, k, tgt, need_weights=False)[0])
        attended = self.cross_attn(_with_pos(tgt, query_pos), reference_points, memory, spatial_shapes, padding_mask)
        tgt = self.norm1(tgt + attended)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class _Layers(nn.Module):
    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


def valid_ratios(mask: torch.Tensor) -> torch.Tensor:
    """[B, 2]: the unpadded fraction (width, height) of a level's map."""
    _, h, w = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1).float() / h
    valid_w = (~mask[:, 0, :]).sum(1).float() / w
    return torch.stack([valid_w, valid_h], -1)


def encoder_reference_points(spatial_shapes: SpatialShapes, ratios: torch.Tensor) -> torch.Tensor:
    """[B, S, L, 2]: every token's centre, in units of the valid area, seen from every level."""
    points = []
    for level, (h, w) in enumerate(spatial_shapes):
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=ratios.device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=ratios.device),
            indexing="ij",
        )
        ref_y = ref_y.reshape(-1)[None] / (ratios[:, None, level, 1] * h)
        ref_x = ref_x.reshape(-1)[None] / (ratios[:, None, level, 0] * w)
        points.append(torch.stack((ref_x, ref_y), -1))
    return torch.cat(points, 1)[:, :, None] * ratios[:, None]


class DeformableTransformer(nn.Module):
    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        num_feature_levels: int = 3,
        enc_n_points: int = 4,
        dec_n_points: int = 4,
        *,
        merge: bool = True,
        scales: Sequence[int] = (1, 3, 5),
        hierarchical_merge: bool = True,
        task_merge: bool = True,
        base: bool = False,
    ):
        super().__init__()
        self.d_model = d_model
        levels = num_feature_levels

        def cross_attn() -> MSDeformAttn:
            if not merge:
                return MSDeformAttn(d_model, levels, nhead, dec_n_points)
            return FineGrainedDeformAttn(d_model, levels, nhead, dec_n_points, scales=scales,
                                         hierarchical_merge=hierarchical_merge, task_merge=task_merge, base=base)

        self.encoder = _Layers(
            [EncoderLayer(d_model, dim_feedforward, levels, nhead, enc_n_points) for _ in range(num_encoder_layers)]
        )
        self.decoder = _Layers(
            [DecoderLayer(d_model, dim_feedforward, levels, nhead, dec_n_points, cross_attn())
             for _ in range(num_decoder_layers)]
        )
        self.level_embed = nn.Parameter(torch.zeros(levels, d_model))
        self.reference_points = nn.Linear(d_model, 2)

    def forward(self, srcs, masks, pos_embeds, query_embed) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-level maps [B, C, H, W], padding masks [B, H, W], position encodings; ``query_embed``
        [Q, 2C] (position half, then content half). Returns the last decoder layer's output [B, Q, C] and the
        reference points [B, Q, 2] (x, y in [0, 1])."""
        spatial_shapes = [tuple(src.shape[-2:]) for src in srcs]
        src_flat = torch.cat([src.flatten(2).transpose(1, 2) for src in srcs], 1)
        mask_flat = torch.cat([mask.flatten(1) for mask in masks], 1)
        pos_flat = torch.cat(
            [pos.flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1)
             for level, pos in enumerate(pos_embeds)], 1)
        ratios = torch.stack([valid_ratios(mask) for mask in masks], 1)  # [B, L, 2]

        memory = src_flat
        reference = encoder_reference_points(spatial_shapes, ratios)
        for layer in self.encoder.layers:
            memory = layer(memory, pos_flat, reference, spatial_shapes, mask_flat)

        batch = memory.shape[0]
        query_pos, tgt = torch.split(query_embed, self.d_model, dim=1)
        query_pos = query_pos.unsqueeze(0).expand(batch, -1, -1)
        tgt = tgt.unsqueeze(0).expand(batch, -1, -1)
        reference_points = self.reference_points(query_pos).sigmoid()
        reference_input = reference_points[:, :, None] * ratios[:, None]  # [B, Q, L, 2]
        for layer in self.decoder.layers:
            tgt = layer(tgt, query_pos, reference_input, memory, spatial_shapes, mask_flat)
        return tgt, reference_points
