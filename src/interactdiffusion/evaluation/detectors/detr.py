"""DETR building blocks shared by the DETR-style HOI detectors (QPIC; FGAHOI uses the pre-processing,
the sine position encoding and ``MLP``).

Written for inference only (no dropout, no auxiliary outputs), with the parameter names of the public
DETR/QPIC code so their checkpoints load into these modules unchanged:

- ``ResNetBackbone.body``: a torchvision ResNet trunk (``conv1`` … ``layer4``) with frozen BatchNorm, built
  with ``weights=None``; pretrained weights only ever come from the detector checkpoint.
- ``DETRTransformer``: ``encoder.layers.N.{self_attn,linear1,linear2,norm1,norm2}``,
  ``decoder.layers.N.{self_attn,multihead_attn,linear1,linear2,norm1,norm2,norm3}``, ``decoder.norm``
  (and ``encoder.norm`` in the pre-norm variant only), attention as ``nn.MultiheadAttention``
  (``in_proj_weight``/``in_proj_bias``/``out_proj``).
- ``MLP.layers.{0,1,2}``: the box heads.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESNET_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}


# -- backbone ---------------------------------------------------------------------------------------------
class ResNetBackbone(nn.Module):
    """ResNet trunk (no pooling, no classifier) whose last stage feeds the transformer.

    ``dilation`` replaces the stride of ``layer4`` (DETR's DC5 variant). The padding mask is resized to
    the feature map by nearest interpolation, as DETR does.
    """

    def __init__(self, name: str = "resnet50", dilation: bool = False):
        super().__init__()
        if name not in _RESNET_CHANNELS:
            raise ValueError(f"unsupported backbone {name!r}; choose one of {sorted(_RESNET_CHANNELS)}")
        kwargs = {"weights": None, "norm_layer": FrozenBatchNorm2d}
        if name in ("resnet50", "resnet101"):
            kwargs["replace_stride_with_dilation"] = [False, False, dilation]
        elif dilation:
            raise ValueError(f"{name} does not support dilation")
        resnet = getattr(torchvision.models, name)(**kwargs)
        parts = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        self.body = nn.Sequential(OrderedDict((part, getattr(resnet, part)) for part in parts))
        self.num_channels = _RESNET_CHANNELS[name]

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(images)
        mask = F.interpolate(mask[None].float(), size=features.shape[-2:]).to(torch.bool)[0]
        return features, mask


class SinePositionEncoding(nn.Module):
    """DETR's sine encoding over the cumulative count of valid (unpadded) pixels, normalised to 2π.

    ``offset`` is subtracted from the count before normalising: 0 in DETR/QPIC, 0.5 (pixel centres) in
    Deformable DETR and the models built on it (FGAHOI).
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, normalize: bool = True,
                 offset: float = 0.0):
        super().__init__()
        self.offset = offset
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = (y_embed - self.offset) / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = (x_embed - self.offset) / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class BackboneWithPosition(nn.Sequential):
    """``[0]`` the CNN, ``[1]`` the position encoding: DETR's ``Joiner``, hence the ``backbone.0.body.*`` keys."""

    def __init__(self, cnn: ResNetBackbone, position: SinePositionEncoding):
        super().__init__(cnn, position)
        self.num_channels = cnn.num_channels

    def forward(self, images: torch.Tensor, mask: torch.Tensor):
        features, mask = self[0](images, mask)
        return features, mask, self[1](mask).to(features.dtype)


# -- transformer -------------------------------------------------------------------------------------------
def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before

    def forward(self, src, padding_mask, pos):
        if self.normalize_before:
            x = self.norm1(src)
            q = k = _with_pos(x, pos)
            src = src + self.self_attn(q, k, x, key_padding_mask=padding_mask, need_weights=False)[0]
            return src + self.linear2(F.relu(self.linear1(self.norm2(src))))
        q = k = _with_pos(src, pos)
        src = self.norm1(src + self.self_attn(q, k, src, key_padding_mask=padding_mask, need_weights=False)[0])
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before

    def forward(self, tgt, memory, padding_mask, pos, query_pos):
        def cross(x):
            return self.multihead_attn(
                _with_pos(x, query_pos), _with_pos(memory, pos), memory,
                key_padding_mask=padding_mask, need_weights=False,
            )[0]

        if self.normalize_before:
            x = self.norm1(tgt)
            q = k = _with_pos(x, query_pos)
            tgt = tgt + self.self_attn(q, k, x, need_weights=False)[0]
            tgt = tgt + cross(self.norm2(tgt))
            return tgt + self.linear2(F.relu(self.linear1(self.norm3(tgt))))
        q = k = _with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + self.self_attn(q, k, tgt, need_weights=False)[0])
        tgt = self.norm2(tgt + cross(tgt))
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class Encoder(nn.Module):
    def __init__(self, layers: list[EncoderLayer], norm: nn.LayerNorm | None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(self, src, padding_mask, pos):
        for layer in self.layers:
            src = layer(src, padding_mask, pos)
        return src if self.norm is None else self.norm(src)


class Decoder(nn.Module):
    def __init__(self, layers: list[DecoderLayer], norm: nn.LayerNorm):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(self, tgt, memory, padding_mask, pos, query_pos):
        for layer in self.layers:
            tgt = layer(tgt, memory, padding_mask, pos, query_pos)
        return self.norm(tgt)


class DETRTransformer(nn.Module):
    """Encoder over the flattened feature map, decoder over learned queries; returns the last decoder
    layer's (normed) output ``[B, num_queries, d_model]``, which is all the HOI heads read at inference."""

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        normalize_before: bool = False,
    ):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.encoder = Encoder(
            [EncoderLayer(d_model, nhead, dim_feedforward, normalize_before) for _ in range(num_encoder_layers)],
            nn.LayerNorm(d_model) if normalize_before else None,
        )
        self.decoder = Decoder(
            [DecoderLayer(d_model, nhead, dim_feedforward, normalize_before) for _ in range(num_decoder_layers)],
            nn.LayerNorm(d_model),
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, mask, query_embed, pos_embed) -> torch.Tensor:
        batch = src.shape[0]
        src = src.flatten(2).transpose(1, 2)  # [B, HW, C]
        pos = pos_embed.flatten(2).transpose(1, 2)
        padding_mask = mask.flatten(1)
        query_pos = query_embed.unsqueeze(0).expand(batch, -1, -1)
        memory = self.encoder(src, padding_mask, pos)
        return self.decoder(torch.zeros_like(query_pos), memory, padding_mask, pos, query_pos)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (DETR's box head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


# -- pre- and post-processing --------------------------------------------------------------------------------
def resized_shape(width: int, height: int, min_size: int = 800, max_size: int | None = 1333) -> tuple[int, int]:
    """(height, width) after DETR's evaluation resize: shorter side ``min_size`` unless the longer side
    would then exceed ``max_size``; the other side truncated to int, as DETR's ``T.RandomResize([800], 1333)``."""
    size = min_size
    if max_size is not None:
        short, long = float(min(width, height)), float(max(width, height))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def preprocess_images(
    images: torch.Tensor | Sequence[torch.Tensor],
    min_size: int = 800,
    max_size: int | None = 1333,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB images → (normalised float batch padded bottom/right with zeros, mask True on padding).

    Each image is resized bilinearly (antialiased when shrinking, like PIL) and rounded back to 8-bit
    levels, which is what DETR's PIL pipeline feeds ``ToTensor``; then ImageNet mean/std.
    """
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"expected a [B, 3, H, W] batch, got shape {tuple(images.shape)}")
        images = list(images)
    resized = []
    for image in images:
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected RGB images [3, H, W], got shape {tuple(image.shape)}")
        if image.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {image.dtype}")
        x = image.to(device=device).float()[None]
        height, width = resized_shape(x.shape[-1], x.shape[-2], min_size, max_size)
        if (height, width) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
            x = x.round().clamp_(0, 255)
        resized.append(x[0] / 255.0)
    batch_h = max(x.shape[1] for x in resized)
    batch_w = max(x.shape[2] for x in resized)
    first = resized[0]
    batch = first.new_zeros((len(resized), 3, batch_h, batch_w))
    mask = torch.ones((len(resized), batch_h, batch_w), dtype=torch.bool, device=first.device)
    mean = torch.tensor(IMAGENET_MEAN, device=first.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=first.device).view(3, 1, 1)
    for i, x in enumerate(resized):
        batch[i, :, : x.shape[1], : x.shape[2]] = (x - mean) / std
        mask[i, : x.shape[1], : x.shape[2]] = False
    return batch, mask


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)
