"""Swin Transformer trunk (Liu et al., ICCV 2021) as FGAHOI uses it: a detection backbone, inference only.

Parameter names and shapes are those of FGAHOI's ``SwinTransformer`` (``patch_embed.{proj,norm}``,
``layers.N.blocks.M.{norm1,attn.{relative_position_bias_table,relative_position_index,qkv,proj},norm2,
mlp.{fc1,fc2}}``, ``layers.N.downsample.{norm,reduction}``, ``normK`` for each output stage), so its
checkpoints load unchanged. Inputs are padded to whole patches and windows and cropped back, as there.
No absolute position embedding (FGAHOI builds Swin with ``ape=False``), no ImageNet weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SwinShape:
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7


# FGAHOI's backbone names (``--backbone``) → shape; "384" variants use 12×12 windows.
SWIN_SHAPES = {
    "swin_tiny": SwinShape(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "swin_small": SwinShape(96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "swin_base": SwinShape(128, (2, 2, 18, 2), (4, 8, 16, 32), 7),
    "swin_base_384": SwinShape(128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "swin_large": SwinShape(192, (2, 2, 18, 2), (6, 12, 24, 48), 7),
    "swin_large_384": SwinShape(192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
}


def swin_shape(backbone: str) -> SwinShape:
    """The shape FGAHOI's ``Backbone`` picks for a name (it tests substrings: small, base, large, 384)."""
    if "swin" not in backbone:
        raise ValueError(f"FGAHOI backbone {backbone!r} is not a Swin Transformer; only Swin checkpoints are supported")
    size = "small" if "small" in backbone else "base" if "base" in backbone else "large" if "large" in backbone else "tiny"
    key = f"swin_{size}" + ("_384" if "384" in backbone and size in ("base", "large") else "")
    return SWIN_SHAPES[key]


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, H, W, C] → [B·nW, size², C]."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size * size, c)


def _unwindow(windows: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    b = windows.shape[0] // ((h // size) * (w // size))
    x = windows.view(b, h // size, w // size, size, size, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias per head."""

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
        coords = coords.flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
        self.register_buffer("relative_position_index", relative[..., 0] * (2 * window_size - 1) + relative[..., 1])
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` [B·nW, N, C]; ``mask`` [nW, N, N] (0 / −100) for shifted windows."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)[None]  # [1, heads, N, N]
        if mask is not None:
            windows = mask.shape[0]
            bias = (bias + mask[:, None]).repeat(bw // windows, 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int):
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        size = self.window_size
        y = self.norm1(x).view(b, h, w, c)
        y = F.pad(y, (0, 0, 0, (size - w % size) % size, 0, (size - h % size) % size))
        hp, wp = y.shape[1:3]
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(_windows(y, size), mask if self.shift else None)
        y = _unwindow(y, size, hp, wp)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y[:, :h, :w].reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2×2 neighbourhoods concatenated (order (0,0), (1,0), (0,1), (1,1)) → LayerNorm → Linear to 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, downsample: bool):
        super().__init__()
        self.window_size = window_size
        self.shift = window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else self.shift) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def shift_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """[nW, N, N]: −100 between tokens that the cyclic shift brought from different regions."""
        size, shift = self.window_size, self.shift
        hp, wp = -(-h // size) * size, -(-w // size) * size
        regions = torch.zeros((1, hp, wp, 1), device=device)
        label = 0
        for hs in (slice(0, -size), slice(-size, -shift), slice(-shift, None)):
            for ws in (slice(0, -size), slice(-size, -shift), slice(-shift, None)):
                regions[:, hs, ws, :] = label
                label += 1
        windows = _windows(regions, size).squeeze(-1)
        mask = windows[:, None, :] - windows[:, :, None]
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def forward(self, x: torch.Tensor, h: int, w: int):
        mask = self.shift_mask(h, w, x.device)
        for block in self.blocks:
            x = block(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int, patch_size: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = images.shape[-2:]
        x = self.proj(F.pad(images, (0, (p - w % p) % p, 0, (p - h % p) % p)))
        return self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(x.shape)


class SwinTransformer(nn.Module):
    """Returns the normalised maps of ``out_indices`` (FGAHOI: stages 1, 2, 3 → strides 8, 16, 32)."""

    def __init__(self, shape: SwinShape = SwinShape(), out_indices: Sequence[int] = (1, 2, 3)):
        super().__init__()
        self.out_indices = tuple(out_indices)
        self.patch_embed = PatchEmbed(shape.embed_dim)
        stages = len(shape.depths)
        self.num_features = [shape.embed_dim * 2**i for i in range(stages)]
        self.layers = nn.ModuleList(
            SwinStage(self.num_features[i], shape.depths[i], shape.num_heads[i], shape.window_size, i < stages - 1)
            for i in range(stages)
        )
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))

    @property
    def channels(self) -> list[int]:
        return [self.num_features[i] for i in self.out_indices]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(images)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        outputs = []
        for i, stage in enumerate(self.layers):
            out, x, next_h, next_w = stage(x, h, w)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outputs.append(out.view(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2).contiguous())
            h, w = next_h, next_w
        return outputs
