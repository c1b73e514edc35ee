"""QPIC (Tamura et al., CVPR 2021) as an HOI scorer: DETR-R50 with HOI heads, behind ``HOIDetector``.

Our own modules with the parameter names of the public QPIC code, so the released HICO-DET checkpoint
(``qpic_resnet50_hico.pth``, Apache-2.0, Default Full/Rare/Non-rare 29.07/21.85/31.23) loads as it is.
Preprocessing and post-processing follow QPIC's evaluation: shorter side 800 (longer ≤ 1333), ImageNet
mean/std, batch padding with a mask; object = argmax of the softmax without the no-object class, verb
score = sigmoid(verb logit) × object score, each (query, verb) pair mapped to an HOI id through the
vocabulary's validity table (invalid pairs dropped, as QPIC's evaluator zeroes them), top 100 per image.

QPIC's objects are COCO-80 contiguous (person = 0) and its verbs HICO-DET's 117 in alphabetical order,
which is the vocabulary's verb order; both are converted here, at the edge.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ...vocab import HOIVocabulary
from .base import ImageDetections
from .checkpoint_io import load_strictly, read_checkpoint
from .detr import (
    MLP,
    BackboneWithPosition,
    DETRTransformer,
    ResNetBackbone,
    SinePositionEncoding,
    box_cxcywh_to_xyxy,
    preprocess_images,
)
from .hoi_triplets import as_vocabulary, hoi_lookup_table, resolve_device, select_triplets
from .registry import DetectorWeightsError, MissingDetectorWeightsError

__all__ = ["QPIC", "QPICConfig", "QPICDetector", "hoi_lookup_table", "load_qpic", "qpic_postprocess"]

QPIC_WEIGHTS_FILE = "qpic_resnet50_hico.pth"
QPIC_RELEASE_URL = "https://github.com/hitachi-rd-cv/qpic/releases/tag/v1.0"


@dataclass(frozen=True)
class QPICConfig:
    """The architecture, under the names of QPIC's command-line arguments (stored in its checkpoints)."""

    backbone: str = "resnet50"
    dilation: bool = False
    position_embedding: str = "sine"
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048
    num_queries: int = 100
    pre_norm: bool = False
    num_obj_classes: int = 80
    num_verb_classes: int = 117

    @classmethod
    def from_args(cls, args: argparse.Namespace | Mapping[str, Any]) -> QPICConfig:
        values = dict(args) if isinstance(args, Mapping) else vars(args)
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def to_args(self) -> argparse.Namespace:
        return argparse.Namespace(**asdict(self), hoi=True, dataset_file="hico", subject_category_id=0)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> QPICConfig:
        """Infer the architecture from tensor shapes (for a checkpoint without ``args``; heads assumed 8)."""

        def count(prefix: str) -> int:
            return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

        channels = state["input_proj.weight"].shape[1]
        if channels == 512:
            backbone = "resnet34" if count("backbone.0.body.layer3.") == 6 else "resnet18"
        else:
            backbone = "resnet101" if count("backbone.0.body.layer3.") == 23 else "resnet50"
        return cls(
            backbone=backbone,
            hidden_dim=state["query_embed.weight"].shape[1],
            enc_layers=count("transformer.encoder.layers."),
            dec_layers=count("transformer.decoder.layers."),
            dim_feedforward=state["transformer.decoder.layers.0.linear1.weight"].shape[0],
            num_queries=state["query_embed.weight"].shape[0],
            pre_norm="transformer.encoder.norm.weight" in state,
            num_obj_classes=state["obj_class_embed.weight"].shape[0] - 1,
            num_verb_classes=state["verb_class_embed.weight"].shape[0],
        )


class QPICOutputs(NamedTuple):
    obj_logits: torch.Tensor  # [B, Q, num_obj_classes + 1], last = no object
    verb_logits: torch.Tensor  # [B, Q, num_verb_classes]
    sub_boxes: torch.Tensor  # [B, Q, 4] cx, cy, w, h in [0, 1] of the unpadded image
    obj_boxes: torch.Tensor  # [B, Q, 4]


class QPIC(nn.Module):
    """DETR + HOI heads; each query is one (human, object, verbs) triplet."""

    def __init__(self, config: QPICConfig = QPICConfig()):
        super().__init__()
        if config.position_embedding not in ("sine", "v2"):
            raise ValueError(f"only the sine position embedding is supported, not {config.position_embedding!r}")
        self.config = config
        d = config.hidden_dim
        self.backbone = BackboneWithPosition(
            ResNetBackbone(config.backbone, config.dilation), SinePositionEncoding(d // 2, normalize=True)
        )
        self.transformer = DETRTransformer(
            d, config.nheads, config.enc_layers, config.dec_layers, config.dim_feedforward, config.pre_norm
        )
        self.query_embed = nn.Embedding(config.num_queries, d)
        self.input_proj = nn.Conv2d(self.backbone.num_channels, d, kernel_size=1)
        self.obj_class_embed = nn.Linear(d, config.num_obj_classes + 1)
        self.verb_class_embed = nn.Linear(d, config.num_verb_classes)
        self.sub_bbox_embed = MLP(d, d, 4, 3)
        self.obj_bbox_embed = MLP(d, d, 4, 3)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> QPICOutputs:
        """``images``: normalised [B, 3, H, W]; ``mask``: [B, H, W], True on padding."""
        features, mask, pos = self.backbone(images, mask)
        hs = self.transformer(self.input_proj(features), mask, self.query_embed.weight, pos)
        return QPICOutputs(
            self.obj_class_embed(hs),
            self.verb_class_embed(hs),
            self.sub_bbox_embed(hs).sigmoid(),
            self.obj_bbox_embed(hs).sigmoid(),
        )


# -- checkpoints -----------------------------------------------------------------------------------------
def load_qpic_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], QPICConfig]:
    """Read a QPIC checkpoint ``{'model': state_dict, ..., 'args': Namespace}`` (or a bare state dict).

    Unpickled with ``weights_only=True`` allowing ``argparse.Namespace`` and nothing else, so a file
    cannot run code; the architecture comes from ``args`` (or, without it, from the tensor shapes).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDetectorWeightsError(
            f"QPIC weights not found: {path}. Download the HICO-DET ResNet-50 checkpoint "
            f"({QPIC_WEIGHTS_FILE}) from {QPIC_RELEASE_URL} and put it there, or point detector.weights "
            "at your copy."
        )
    state, args = read_checkpoint(path, "QPIC")
    if "query_embed.weight" not in state or "verb_class_embed.weight" not in state:
        raise DetectorWeightsError(f"{path} is not a QPIC HOI checkpoint (no query_embed / verb_class_embed keys)")
    if args is not None:
        config = QPICConfig.from_args(args)
    else:
        config = QPICConfig.from_state_dict(state)
    return state, config


def load_qpic(path: str | Path) -> QPIC:
    state, config = load_qpic_checkpoint(path)
    return load_strictly(QPIC(config), state, path, "QPIC", config)


# -- post-processing -------------------------------------------------------------------------------------------
@torch.no_grad()
def qpic_postprocess(
    outputs: QPICOutputs,
    sizes: Sequence[tuple[int, int]],
    hoi_lookup: torch.Tensor,
    top_k: int | None = 100,
) -> list[ImageDetections]:
    """Raw QPIC outputs → per image the ``top_k`` best valid HOI triplets in pixels of ``sizes`` (w, h).

    Ties keep query-major, verb-minor order (a stable sort), so results are deterministic.
    """
    obj_logits, verb_logits, sub_boxes, obj_boxes = (t.detach().float().cpu() for t in outputs)
    if len(sizes) != obj_logits.shape[0]:
        raise ValueError(f"{len(sizes)} sizes for {obj_logits.shape[0]} images")
    if verb_logits.shape[-1] != hoi_lookup.shape[0] or obj_logits.shape[-1] - 1 != hoi_lookup.shape[1]:
        raise ValueError(
            f"outputs have {obj_logits.shape[-1] - 1} objects / {verb_logits.shape[-1]} verbs, "
            f"the HOI lookup {hoi_lookup.shape[1]} / {hoi_lookup.shape[0]}"
        )
    obj_scores, obj_labels = obj_logits.softmax(-1)[..., :-1].max(-1)  # [B, Q]
    verb_scores = verb_logits.sigmoid() * obj_scores[..., None]  # [B, Q, V]
    scale = torch.tensor([[w, h, w, h] for w, h in sizes], dtype=torch.float32)[:, None, :]
    human_xyxy = box_cxcywh_to_xyxy(sub_boxes) * scale
    object_xyxy = box_cxcywh_to_xyxy(obj_boxes) * scale
    return select_triplets(verb_scores, obj_labels, human_xyxy, object_xyxy, hoi_lookup, top_k)


# -- the detector ------------------------------------------------------------------------------------------------
class QPICDetector:
    """``HOIDetector`` around a ``QPIC`` model: uint8 images in, HOI triplets in original pixels out.

    Any DETR-style HOI model with a ``config`` (``num_obj_classes``, ``num_verb_classes``) fits; a subclass
    changes ``postprocess`` (FGAHOI)."""

    def __init__(
        self,
        model: nn.Module,
        vocabulary: HOIVocabulary | str | Path,
        *,
        object_space: str = "coco80",
        top_k: int | None = 100,
        min_size: int = 800,
        max_size: int | None = 1333,
        batch_size: int = 8,
        device: str | torch.device | None = None,
        name: str = "qpic",
    ):
        vocabulary = as_vocabulary(vocabulary)
        if model.config.num_verb_classes != vocabulary.num_verbs:
            raise ValueError(
                f"the {name} model has {model.config.num_verb_classes} verb classes, the vocabulary "
                f"{vocabulary.num_verbs}; its verbs must be the vocabulary's, in the same order"
            )
        self.name = name
        self.vocabulary = vocabulary
        self.device = resolve_device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.hoi_lookup = hoi_lookup_table(vocabulary, model.config.num_obj_classes, object_space)
        self.top_k = top_k
        self.min_size = min_size
        self.max_size = max_size
        self.batch_size = batch_size

    @torch.no_grad()
    def detect(
        self, images: torch.Tensor | Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]]
    ) -> list[ImageDetections]:
        images = list(images)
        sizes = [(int(w), int(h)) for w, h in sizes]
        if len(images) != len(sizes):
            raise ValueError(f"{len(images)} images but {len(sizes)} sizes")
        results: list[ImageDetections] = []
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            pixels, mask = preprocess_images(images[chunk], self.min_size, self.max_size, self.device)
            results.extend(self.postprocess(self.model(pixels, mask), sizes[chunk]))
        return results

    def postprocess(self, outputs, sizes: Sequence[tuple[int, int]]) -> list[ImageDetections]:
        return qpic_postprocess(outputs, sizes, self.hoi_lookup, self.top_k)


def build_qpic_detector(
    vocabulary: HOIVocabulary | str | Path,
    weights: str | Path,
    **detector_kwargs: Any,
) -> QPICDetector:
    """The released QPIC (or any checkpoint in its container): COCO-80 objects, the vocabulary's verbs."""
    if weights is None:
        raise MissingDetectorWeightsError(
            f"detector=qpic needs detector.weights: download {QPIC_WEIGHTS_FILE} from {QPIC_RELEASE_URL} "
            "(or use detector=random for an untrained stand-in)"
        )
    return QPICDetector(load_qpic(weights), vocabulary, object_space="coco80", **detector_kwargs)


def build_random_qpic_detector(
    vocabulary: HOIVocabulary | str | Path,
    *,
    seed: int = 0,
    backbone: str = "resnet18",
    hidden_dim: int = 64,
    nheads: int = 2,
    enc_layers: int = 1,
    dec_layers: int = 1,
    dim_feedforward: int = 128,
    num_queries: int = 20,
    object_space: str = "vocabulary",
    name: str = "qpic_random",
    **detector_kwargs: Any,
) -> QPICDetector:
    """An untrained QPIC of any size (seeded): exercises the whole scoring path without weights."""
    vocabulary = as_vocabulary(vocabulary)
    config = QPICConfig(
        backbone=backbone,
        hidden_dim=hidden_dim,
        nheads=nheads,
        enc_layers=enc_layers,
        dec_layers=dec_layers,
        dim_feedforward=dim_feedforward,
        num_queries=num_queries,
        num_obj_classes=80 if object_space == "coco80" else vocabulary.num_objects,
        num_verb_classes=vocabulary.num_verbs,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = QPIC(config)
    return QPICDetector(model, vocabulary, object_space=object_space, name=name, **detector_kwargs)
