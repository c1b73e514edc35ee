"""FGAHOI as an ``HOIDetector``: its released HICO-DET checkpoints, its pre- and post-processing.

Pre-processing is DETR's evaluation resize (shorter side 800, longer ≤ 1333), ImageNet mean/std and batch
padding with a mask, as FGAHOI's ``make_hico_transforms('val')``. Post-processing is FGAHOI's
``PostProcessHOI``: softmax over the object logits (the no-object column dropped only for ``no_obj`` models),
the best 100 (query, object class) pairs over the flattened Q × classes grid (a query may appear twice),
verb score = sigmoid(verb logit) × the pair's object score, boxes cx,cy,w,h → x1,y1,x2,y2 × the original
size, unclamped. FGAHOI's evaluator then zeroes (verb, object) pairs that are no HOI class and keeps the
100 best triplets; here those pairs are dropped and the best ``top_k`` (100) kept, which selects the same
triplets in the same order, and the FGAHOI protocol's own top-100 is then a no-op before its NMS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ....vocab import HOIVocabulary
from ..base import ImageDetections
from ..checkpoint_io import args_dict, load_strictly, read_checkpoint
from ..detr import box_cxcywh_to_xyxy
from ..hoi_triplets import as_vocabulary, hoi_lookup_table, select_triplets
from ..qpic import QPICDetector
from ..registry import DetectorWeightsError, MissingDetectorWeightsError
from .model import FGAHOI, FGAHOIConfig, FGAHOIOutputs
from .swin import SwinShape

FGAHOI_README = "https://github.com/xiaomabufei/FGAHOI#results"
FGAHOI_WEIGHTS = {
    "swin_tiny": ("Swin-Tiny", "https://drive.google.com/file/d/1WzBZ-jEy7kA02ynXQdugnF44e7cTNnD9/view"),
    "swin_large": ("Swin-Large*+", "https://drive.google.com/file/d/1GTm9vh1D145wJhlZXpDGJMMUnWi-_gM_/view"),
}
NUM_PAIRS = 100  # PostProcessHOI's top-k over (query, object class)
ALIASED_HEADS = ("class_embed", "verb_class_embed", "bbox_embed", "sub_bbox_embed", "hoi_bbox_embed")


def _where_published(variant: str | None) -> str:
    if variant in FGAHOI_WEIGHTS:
        label, url = FGAHOI_WEIGHTS[variant]
        return f"the FGAHOI {label} HICO-DET checkpoint ({url}, linked from {FGAHOI_README})"
    return f"an FGAHOI HICO-DET checkpoint (Swin-Tiny or Swin-Large*+, linked from {FGAHOI_README})"


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def swin_shape_from_state(state: Mapping[str, torch.Tensor]) -> SwinShape:
    """The Swin shape the tensors imply (so Swin-L with 7×7 or 12×12 windows needs no guess from a name)."""
    prefix = "backbone.0.body.layers."
    stages = _count(state, prefix)
    depths = tuple(_count(state, f"{prefix}{i}.blocks.") for i in range(stages))
    heads = tuple(state[f"{prefix}{i}.blocks.0.attn.relative_position_bias_table"].shape[1] for i in range(stages))
    table = state[f"{prefix}0.blocks.0.attn.relative_position_bias_table"].shape[0]
    window = (int(round(table**0.5)) + 1) // 2
    return SwinShape(state["backbone.0.body.patch_embed.proj.weight"].shape[0], depths, heads, window)


def _sampling_scales(stored: Any, levels: int) -> tuple[int, ...]:
    """``args.scale`` when it is a list of ints, else FGAHOI's default [1, 3, 5]: its evaluation builds the model
    from its own command line (where ``--scale`` keeps that default), not from the stored ``args``, and its
    ``type=list`` argument turns a typed ``--scale`` into characters."""
    if isinstance(stored, (list, tuple)) and len(stored) >= levels and all(isinstance(v, int) for v in stored):
        return tuple(stored)
    return (1, 3, 5)


def config_from_state(state: Mapping[str, torch.Tensor], args: Any, path: Path) -> FGAHOIConfig:
    """Sizes and switched-on parts from the tensors; ``args`` for what tensors cannot say (``no_obj``,
    ``merge``, ``base``, ``scale``), FGAHOI's defaults for those without ``args``."""
    values = args_dict(args)
    cross = "transformer.decoder.layers.0.cross_attn."
    hierarchical, task = f"{cross}q_spital.weight" in state, f"{cross}fcV2.0.weight" in state
    values.update(
        hidden_dim=state["query_embed.weight"].shape[1] // 2,
        num_queries=state["query_embed.weight"].shape[0],
        enc_layers=_count(state, "transformer.encoder.layers."),
        dec_layers=_count(state, "transformer.decoder.layers."),
        dim_feedforward=state["transformer.decoder.layers.0.linear1.weight"].shape[0],
        num_verb_classes=state["verb_class_embed.0.weight"].shape[0],
        num_feature_levels=state["transformer.level_embed"].shape[0],
        hierarchical_merge=hierarchical,
        task_merge=task,
    )
    values["merge"] = hierarchical or task or bool(values.get("merge", False))
    values["scale"] = _sampling_scales(values.get("scale"), values["num_feature_levels"])
    values["offset_stride"] = tuple(state[f"offset.{i}.0.weight"].shape[-1] for i in range(_count(state, "offset.")))
    values["num_obj_classes"] = state["class_embed.0.weight"].shape[0] - int(bool(values.get("no_obj", False)))
    values.pop("swin", None)
    try:
        config = FGAHOIConfig.from_args(values, source=str(path))
    except (TypeError, ValueError) as err:
        raise DetectorWeightsError(f"{path}: unusable FGAHOI args: {err}") from None
    return dataclasses.replace(config, swin=swin_shape_from_state(state))


def load_fgahoi_checkpoint(path: str | Path, variant: str | None = None) -> tuple[dict[str, torch.Tensor], FGAHOIConfig]:
    """Read an FGAHOI checkpoint ``{'model', 'optimizer', 'lr_scheduler', 'epoch', 'args'}`` (or a state dict).

    Safe (``weights_only``, ``argparse.Namespace`` the only global); the architecture comes from ``args`` and
    the tensor shapes. ``variant`` ("swin_tiny", "swin_large") only words the missing-file error.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDetectorWeightsError(
            f"FGAHOI weights not found: {path}. Download {_where_published(variant)} and put it there, "
            "or point detector.weights at your copy. Nothing is downloaded at run time."
        )
    state, args = read_checkpoint(path, "FGAHOI")
    required = ("transformer.level_embed", "class_embed.0.weight", "query_embed.weight",
                "backbone.0.body.patch_embed.proj.weight")
    absent = [k for k in required if k not in state]
    if absent:
        hint = " (it looks like a QPIC checkpoint: use detector=qpic)" if "obj_class_embed.weight" in state else ""
        raise DetectorWeightsError(f"{path} is not an FGAHOI Swin checkpoint: no {', '.join(absent)}{hint}")
    for head in ALIASED_HEADS:
        first = {k: v for k, v in state.items() if k.startswith(f"{head}.0.")}
        for key, tensor in state.items():
            if key.startswith(f"{head}.") and not key.startswith(f"{head}.0."):
                twin = f"{head}.0." + key.split(".", 2)[2]
                if twin not in first or not torch.equal(first[twin], tensor):
                    raise DetectorWeightsError(
                        f"{path}: {key} differs from {twin}; FGAHOI's released models share one head across "
                        "decoder layers (no box refinement), this checkpoint does not"
                    )
    return state, config_from_state(state, args, path)


def save_fgahoi_checkpoint(model: FGAHOI, path: str | Path, epoch: int = 0) -> None:
    """FGAHOI's own container (empty optimizer / scheduler states), loadable by its code and ours."""
    torch.save({"model": model.state_dict(), "optimizer": {}, "lr_scheduler": {}, "epoch": epoch,
                "args": model.config.to_args()}, path)


def load_fgahoi(path: str | Path, variant: str | None = None) -> FGAHOI:
    state, config = load_fgahoi_checkpoint(path, variant)
    return load_strictly(FGAHOI(config), state, path, "FGAHOI", config)


@torch.no_grad()
def fgahoi_postprocess(
    outputs: FGAHOIOutputs,
    sizes: Sequence[tuple[int, int]],
    hoi_lookup: torch.Tensor,
    no_obj: bool = False,
    top_k: int | None = 100,
) -> list[ImageDetections]:
    """Raw FGAHOI outputs → per image the ``top_k`` best valid triplets in pixels of ``sizes`` (w, h)."""
    obj_logits, verb_logits, sub_boxes, obj_boxes = (t.detach().float().cpu() for t in outputs)
    if len(sizes) != obj_logits.shape[0]:
        raise ValueError(f"{len(sizes)} sizes for {obj_logits.shape[0]} images")
    obj_prob = obj_logits.softmax(-1)
    if no_obj:
        obj_prob = obj_prob[..., :-1]
    num_classes = obj_prob.shape[-1]
    if verb_logits.shape[-1] != hoi_lookup.shape[0] or num_classes != hoi_lookup.shape[1]:
        raise ValueError(f"outputs have {num_classes} objects / {verb_logits.shape[-1]} verbs, "
                         f"the HOI lookup {hoi_lookup.shape[1]} / {hoi_lookup.shape[0]}")
    k = min(NUM_PAIRS, obj_prob.shape[1] * num_classes)
    obj_scores, index = torch.topk(obj_prob.flatten(1), k, dim=1)
    query = torch.div(index, num_classes, rounding_mode="floor")
    obj_labels = index % num_classes
    verb_scores = torch.gather(verb_logits.sigmoid(), 1, query[..., None].expand(-1, -1, verb_logits.shape[-1]))
    verb_scores = verb_scores * obj_scores[..., None]
    scale = torch.tensor([[w, h, w, h] for w, h in sizes], dtype=torch.float32)[:, None, :]
    human = box_cxcywh_to_xyxy(torch.gather(sub_boxes, 1, query[..., None].expand(-1, -1, 4))) * scale
    obj = box_cxcywh_to_xyxy(torch.gather(obj_boxes, 1, query[..., None].expand(-1, -1, 4))) * scale
    return select_triplets(verb_scores, obj_labels, human, obj, hoi_lookup, top_k)


class FGAHOIDetector(QPICDetector):
    """``HOIDetector`` around an ``FGAHOI`` model (batched, on any device); FGAHOI's post-processing."""

    def __init__(self, model: FGAHOI, vocabulary: HOIVocabulary | str | Path, *, name: str = "fgahoi",
                 object_space: str = "coco80", **kwargs: Any):
        super().__init__(model, vocabulary, name=name, object_space=object_space, **kwargs)
        self.no_obj = model.config.no_obj

    def postprocess(self, outputs, sizes: Sequence[tuple[int, int]]) -> list[ImageDetections]:
        return fgahoi_postprocess(outputs, sizes, self.hoi_lookup, self.no_obj, self.top_k)


def build_fgahoi_detector(
    vocabulary: HOIVocabulary | str | Path,
    weights: str | Path | None,
    variant: str | None = None,
    name: str | None = None,
    **detector_kwargs: Any,
) -> FGAHOIDetector:
    """A released FGAHOI checkpoint (COCO-80 objects, the vocabulary's 117 verbs)."""
    if weights is None:
        raise MissingDetectorWeightsError(f"detector=fgahoi needs detector.weights: {_where_published(variant)}")
    return FGAHOIDetector(load_fgahoi(weights, variant), vocabulary, name=name or f"fgahoi_{variant or 'swin'}",
                          **detector_kwargs)


def build_random_fgahoi_detector(
    vocabulary: HOIVocabulary | str | Path,
    *,
    seed: int = 0,
    hidden_dim: int = 32,
    nheads: int = 2,
    enc_layers: int = 1,
    dec_layers: int = 1,
    dim_feedforward: int = 64,
    num_queries: int = 12,
    swin_embed_dim: int = 16,
    swin_depths: Sequence[int] = (2, 2, 2, 2),
    swin_heads: Sequence[int] = (1, 2, 2, 4),
    swin_window: int = 4,
    object_space: str = "vocabulary",
    name: str = "fgahoi_random",
    **detector_kwargs: Any,
) -> FGAHOIDetector:
    """An untrained FGAHOI of any size (seeded), every part switched on: the whole path without weights."""
    vocabulary = as_vocabulary(vocabulary)
    config = FGAHOIConfig(
        hidden_dim=hidden_dim, nheads=nheads, enc_layers=enc_layers, dec_layers=dec_layers,
        dim_feedforward=dim_feedforward, num_queries=num_queries,
        num_obj_classes=80 if object_space == "coco80" else vocabulary.num_objects,
        num_verb_classes=vocabulary.num_verbs,
        swin=SwinShape(swin_embed_dim, tuple(swin_depths), tuple(swin_heads), swin_window),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FGAHOI(config)
        randomize_(model)
    return FGAHOIDetector(model, vocabulary, object_space=object_space, name=name, **detector_kwargs)


@torch.no_grad()
def randomize_(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter drawn afresh (fan-in scaled), so no part is a zero or identity map as at init."""
    for name, p in model.named_parameters():
        if p.dim() > 1:
            p.normal_(0.0, p[0].numel() ** -0.5)
        elif name.endswith("weight"):
            p.normal_(1.0, 0.1)
        else:
            p.normal_(0.0, 0.1)
    return model


__all__ = ["FGAHOIDetector", "build_fgahoi_detector", "build_random_fgahoi_detector", "fgahoi_postprocess",
           "hoi_lookup_table", "load_fgahoi", "load_fgahoi_checkpoint", "save_fgahoi_checkpoint"]
