"""Scoring a row's images: the detector and the FID/KID metrics built from their configs, detection,
the GT in the scored images' pixels, and mAP under each protocol."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..data.records import ImageRecord
from ..vocab import HOIVocabulary
from .detectors.base import HOIDetection, ImageDetections
from .image_io import decoded_batches
from .settings import EvalError, absolute, plain

log = logging.getLogger("interactdiffusion.eval")


def build_from_config(spec: DictConfig | dict, **extra):
    """Call a ``_target_`` config with ``extra`` keyword arguments. Through a partial, so the target's own
    exception comes out (not Hydra's ``InstantiationException`` wrapping it)."""
    from hydra.utils import instantiate

    if not isinstance(spec, DictConfig):
        spec = OmegaConf.create(spec)
    return instantiate(spec, _partial_=True)(**extra)


def build_detector(detector_cfg: DictConfig | dict, vocab: HOIVocabulary, device: str):
    """``instantiate(cfg.detector)`` with the vocabulary and device (a ``_target_`` config), or
    ``build_detector(**cfg)`` for a plain ``{kind: ..., ...}`` mapping."""
    from .detectors import DetectorWeightsError
    from .detectors import build_detector as build

    try:
        if "_target_" in detector_cfg:
            return build_from_config(detector_cfg, vocabulary=vocab, device=device)
        return build(**dict(plain(detector_cfg)), vocabulary=vocab, device=device)
    except DetectorWeightsError as error:
        raise EvalError(str(error)) from None


def build_metrics(metrics_cfg: DictConfig | dict, device: str):
    """The FID/KID metrics of a ``configs/metrics`` config (or plain ``build_image_metrics`` arguments)."""
    from .image_metrics import MetricWeightsError, build_image_metrics

    try:
        if "_target_" in metrics_cfg:
            return build_from_config(metrics_cfg, device=device)
        return build_image_metrics(**dict(plain(metrics_cfg)), device=device)
    except MetricWeightsError as error:
        raise EvalError(str(error)) from None


def detector_identity(detector_cfg: DictConfig | dict | None, detector=None) -> dict[str, Any]:
    spec = plain(detector_cfg) or {}
    name = getattr(detector, "name", None) or spec.get("kind") or "unknown"
    return {"name": str(name), "weights": absolute(spec.get("weights"))}


def detect_images(detector, images: Sequence[torch.Tensor],
                  sizes: Sequence[tuple[int, int]]) -> list[ImageDetections | Sequence[HOIDetection]]:
    """Per image an :class:`ImageDetections` (or, from a simple detector, a list of ``HOIDetection``)."""
    return list(detector.detect(list(images), list(sizes)))


def known_object_mask(anno_mat: str | None, records: Sequence[ImageRecord], vocab: HOIVocabulary, protocol: str):
    """The official protocol's Known Object images from ``anno.mat`` when given (else GT objects)."""
    if not anno_mat or protocol != "official":
        return None, None
    from .hoi_map import known_object_from_anno_mat

    try:
        return known_object_from_anno_mat(anno_mat, [r.file_name for r in records], vocab), "anno_mat"
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise EvalError(f"data.anno_mat: {error}") from None


def score_map(
    records: Sequence[ImageRecord],
    detections: Sequence[ImageDetections | Sequence[HOIDetection]],
    vocab: HOIVocabulary,
    protocols: Sequence[str],
    anno_mat: str | None = None,
) -> dict[str, dict[str, Any]]:
    """The evaluator's full output per protocol, for GT ``records`` and per-record ``detections``."""
    from .hoi_map import DetectionArrays, HOIEvaluator

    if len(detections) != len(records):
        raise ValueError(f"{len(detections)} per-image detection lists for {len(records)} GT images")
    detections = DetectionArrays.from_per_image(detections)  # once for every protocol
    if len(detections) == 0:
        log.warning(f"the detector found nothing on {len(records)} images: every mAP is 0 (check the detector, "
                    "its weights and that the images are what it expects)")
    out = {}
    for protocol in protocols:
        mask, source = known_object_mask(anno_mat, records, vocab, protocol)
        evaluator = HOIEvaluator(records, vocab, protocol, known_object=mask, known_object_source=source)
        out[protocol] = evaluator.evaluate(detections)
    return out


def generated_ground_truth(records: Sequence[ImageRecord], resolution: int) -> list[ImageRecord]:
    """GT for ``resolution``² generated images: boxes × (W'/W, H'/H), truncated to int (REFERENCE §5)."""
    from .hoi_map import rescale_ground_truth

    return rescale_ground_truth(records, (resolution, resolution))


def reference_batches(paths: Sequence[Path], resolution: int, batch_size: int, num_workers: int):
    """uint8 batches of the real images squashed to ``resolution``² (the FID/KID reference)."""

    def batches():
        for batch in decoded_batches(paths, batch_size, num_workers, size=resolution):
            yield torch.stack(batch)

    return batches
