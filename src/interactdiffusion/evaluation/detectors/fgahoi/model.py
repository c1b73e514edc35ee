"""FGAHOI (Ma et al., TPAMI 2023): Swin backbone + deformable transformer with fine-grained anchors + HOI heads.

Module names follow FGAHOI's ``DABDeformableDETR`` so that its released checkpoints load strictly:
``backbone.0.body.*`` (Swin), ``input_proj.N.{0,1}`` (1×1 conv + GroupNorm per level), ``transformer.*``,
``query_embed`` [Q, 2C], and the heads ``class_embed``, ``verb_class_embed``, ``{bbox,sub_bbox,hoi_bbox}_embed``
as FGAHOI stores them: one module per decoder layer, all aliases of one (no box refinement). ``offset.*`` (the
dynamic-anchor convolutions, off in every released model) is built so the keys load, and never run.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

import torch
from torch import nn

from ..detr import MLP, SinePositionEncoding
from .swin import SwinShape, SwinTransformer, swin_shape
from .transformer import DeformableTransformer


@dataclass(frozen=True)
class FGAHOIConfig:
    """The architecture, under the names of FGAHOI's command-line arguments (stored in its checkpoints).

    Defaults are FGAHOI-Swin-T as evaluated for the paper (``--merge --hierarchical_merge --task_merge``).
    ``swin`` overrides the shape that ``backbone`` names (small random models for tests only).
    """

    backbone: str = "swin_tiny"
    position_embedding: str = "sine"
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    num_queries: int = 300
    num_feature_levels: int = 3
    enc_n_points: int = 4
    dec_n_points: int = 4
    num_obj_classes: int = 80
    num_verb_classes: int = 117
    no_obj: bool = False
    merge: bool = True
    scale: tuple[int, ...] = (1, 3, 5)
    hierarchical_merge: bool = True
    task_merge: bool = True
    base: bool = False
    offset_stride: tuple[int, ...] = (11, 7, 3)
    swin: SwinShape | None = field(default=None, compare=True)

    # Variants FGAHOI's code has but no released HICO-DET model uses; refused rather than run wrongly.
    UNSUPPORTED = {"two_stage": False, "use_dab": False, "with_box_refine": False, "dynamic": False,
                   "dilation": False, "num_patterns": 0}

    def __post_init__(self):
        if self.position_embedding not in ("sine", "v2"):
            raise ValueError(f"only the sine position embedding is supported, not {self.position_embedding!r}")
        if self.num_feature_levels != 3:
            raise ValueError(f"FGAHOI uses 3 feature levels (Swin stages 1-3), not {self.num_feature_levels}")
        if self.hidden_dim % 32:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be a multiple of 32 (GroupNorm(32) after input_proj)")

    @property
    def swin_shape(self) -> SwinShape:
        return self.swin or swin_shape(self.backbone)

    @classmethod
    def from_args(cls, args: argparse.Namespace | Mapping[str, Any], source: str = "args") -> FGAHOIConfig:
        values = dict(args) if isinstance(args, Mapping) else vars(args)
        for name, expected in cls.UNSUPPORTED.items():
            value = values.get(name, expected)
            if value not in (expected, None, "False", "false", ""):
                raise ValueError(f"{source}: {name}={value!r} is an FGAHOI variant this implementation does not run")
        kwargs = {f.name: values[f.name] for f in fields(cls) if f.name in values and f.name != "swin"}
        for name in ("scale", "offset_stride"):
            if name in kwargs:
                kwargs[name] = tuple(int(v) for v in kwargs[name])
        if isinstance(values.get("swin"), Mapping):
            kwargs["swin"] = SwinShape(**{k: tuple(v) if isinstance(v, list) else v for k, v in values["swin"].items()})
        return cls(**kwargs)

    def to_args(self) -> argparse.Namespace:
        """FGAHOI's ``args`` for this architecture (plain types only, as its checkpoints store them)."""
        values = {k: v for k, v in asdict(self).items() if k != "swin"}
        values["scale"] = list(self.scale)
        values["offset_stride"] = list(self.offset_stride)
        if self.swin is not None:
            values["swin"] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.swin).items()}
        return argparse.Namespace(**values, **self.UNSUPPORTED, modelname="dab_deformable_detr",
                                  dataset_file="hico", subject_category_id=0)


class FGAHOIOutputs(NamedTuple):
    obj_logits: torch.Tensor  # [B, Q, num_obj_classes (+1 with no_obj)]
    verb_logits: torch.Tensor  # [B, Q, num_verb_classes]
    sub_boxes: torch.Tensor  # [B, Q, 4] cx, cy, w, h in [0, 1] of the unpadded image
    obj_boxes: torch.Tensor  # [B, Q, 4]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class _SwinBody(nn.Module):
    """``backbone.0``: the Swin trunk under ``body``, plus the mask resized to each output level."""

    def __init__(self, shape: SwinShape):
        super().__init__()
        self.body = SwinTransformer(shape, out_indices=(1, 2, 3))

    def forward(self, images: torch.Tensor, mask: torch.Tensor):
        features = self.body(images)
        masks = [nn.functional.interpolate(mask[None].float(), size=f.shape[-2:]).to(torch.bool)[0] for f in features]
        return features, masks


class _Backbone(nn.Sequential):
    """FGAHOI's ``Joiner``: ``[0]`` the trunk, ``[1]`` the position encoding (0.5-offset sine)."""

    def __init__(self, shape: SwinShape, hidden_dim: int):
        super().__init__(_SwinBody(shape), SinePositionEncoding(hidden_dim // 2, normalize=True, offset=0.5))

    def forward(self, images: torch.Tensor, mask: torch.Tensor):
        features, masks = self[0](images, mask)
        return features, masks, [self[1](m).to(f.dtype) for f, m in zip(features, masks)]


def _aliased(module: nn.Module, copies: int) -> nn.ModuleList:
    return nn.ModuleList([module] * copies)


class _LayerNormChannels(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)


def _offset_branch(channels: int, stride: int) -> nn.Sequential:
    """FGAHOI's dynamic-anchor offset net (kept for its keys; the released models run with ``dynamic`` off)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, stride, stride, groups=channels),
        _LayerNormChannels(channels),
        nn.GELU(),
        nn.Conv2d(channels, 2, 1, 1, 0, bias=False),
    )


class FGAHOI(nn.Module):
    """Each of the ``num_queries`` queries predicts a human box, an object box, object and verb logits."""

    def __init__(self, config: FGAHOIConfig = FGAHOIConfig()):
        super().__init__()
        self.config = config
        d = config.hidden_dim
        self.backbone = _Backbone(config.swin_shape, d)
        channels = self.backbone[0].body.channels
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(32, d)) for c in channels
        )
        self.transformer = DeformableTransformer(
            d, config.nheads, config.enc_layers, config.dec_layers, config.dim_feedforward,
            config.num_feature_levels, config.enc_n_points, config.dec_n_points,
            merge=config.merge, scales=config.scale, hierarchical_merge=config.hierarchical_merge,
            task_merge=config.task_merge, base=config.base,
        )
        self.query_embed = nn.Embedding(config.num_queries, 2 * d)
        layers = config.dec_layers
        self.class_embed = _aliased(nn.Linear(d, config.num_obj_classes + int(config.no_obj)), layers)
        self.verb_class_embed = _aliased(nn.Linear(d, config.num_verb_classes), layers)
        self.bbox_embed = _aliased(MLP(d, d, 4, 3), layers)
        self.sub_bbox_embed = _aliased(MLP(d, d, 4, 3), layers)
        self.hoi_bbox_embed = _aliased(MLP(d, d, 4, 3), layers)
        self.offset = nn.ModuleList(_offset_branch(c, s) for c, s in zip(channels, config.offset_stride))

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> FGAHOIOutputs:
        """``images``: normalised [B, 3, H, W]; ``mask``: [B, H, W], True on padding."""
        features, masks, pos = self.backbone(images, mask)
        srcs = [proj(f) for proj, f in zip(self.input_proj, features)]
        hs, reference = self.transformer(srcs, masks, pos, self.query_embed.weight)
        reference = inverse_sigmoid(reference)

        def boxes(head: nn.Module) -> torch.Tensor:
            out = head(hs)
            return torch.cat((out[..., :2] + reference, out[..., 2:]), -1).sigmoid()

        return FGAHOIOutputs(
            self.class_embed[-1](hs), self.verb_class_embed[-1](hs),
            boxes(self.sub_bbox_embed[-1]), boxes(self.bbox_embed[-1]),
        )
