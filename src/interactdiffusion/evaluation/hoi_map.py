"""HICO-DET HOI detection mAP: the ``official`` and ``fgahoi`` protocols of REFERENCE §5.

Ground truth is a list of :class:`ImageRecord` (continuous 0-based boxes; see
``protocols/boxes.py`` for how they map back to HICO-DET's integer boxes), detections are
:class:`DetectionArrays` or one list of :class:`HOIDetection` per record, in continuous 0-based pixels
of the GT image. Both protocols report Full / Rare / Non-rare for the Default and the Known Object
settings, and AP and recall per class, in percent::

    evaluator = HOIEvaluator(records, vocab, protocol="fgahoi")
    results = evaluator.evaluate(detections)
    results["default"]["full"], results["known_object"]["rare"], results["per_class"][h]["ap"]

Undefined values (a class that cannot be scored, a split with no class left) are ``None`` so the
results are strict JSON. The evaluator keeps the ground truth prepared, so repeated evaluations (a
training callback) only pay for the detections.

Conventions worth knowing (each reproduces the reference code, see ``protocols/``):

* ``official`` treats detection coordinates as 0-based pixel indices and adds 1, as ho-rcnn does with
  every detector's output; a detection equal to the continuous GT box therefore overlaps it by
  ``w/(w+1)`` per axis, not 1. ``fgahoi`` compares continuous detections with ``int(v - 1)`` GT boxes.
* Equal scores are ranked by image (GT record order), then by input row, in every step.
* A class without GT: ``official`` AP 0, counted in the means (what MATLAB computes);
  ``fgahoi`` AP NaN (left out) if it has detections, else 0 (counted). On the full test set every
  class has GT; on subsets (``eval.limit``) this decides the means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data.records import ImageRecord
from ..vocab import HOIVocabulary
from .detectors.base import HOIDetection
from .protocols.arrays import DetectionArrays, GroundTruthArrays
from .protocols.average_precision import mean_ap, per_class_ap
from .protocols.boxes import rescale_records
from .protocols.fgahoi import match_fgahoi, top_k_per_image, triplet_nms
from .protocols.grouping import canonical_order, score_order
from .protocols.known_object import (
    known_object_from_anno_mat,
    known_object_from_gt,
    known_object_from_labels,
    known_object_from_obj_cat_json,
)
from .protocols.official import match_official

PROTOCOLS = ("official", "fgahoi")
SETTINGS = ("default", "known_object")
SPLITS = ("full", "rare", "non_rare")

__all__ = [
    "PROTOCOLS",
    "DetectionArrays",
    "HOIEvaluator",
    "evaluate_hoi_detection",
    "format_results_table",
    "known_object_from_anno_mat",
    "known_object_from_labels",
    "known_object_from_obj_cat_json",
    "rescale_ground_truth",
]


def rescale_ground_truth(
    records: Sequence[ImageRecord], size: tuple[int, int] | Sequence[tuple[int, int]] = (512, 512)
) -> list[ImageRecord]:
    """GT for generated ``W'×H'`` images: original boxes scaled by ``W'/W``, ``H'/H``, truncated to int."""
    return rescale_records(records, size)


def _percent(value: float) -> float | None:
    return None if math.isnan(value) else 100.0 * float(value)


class HOIEvaluator:
    """Prepared ground truth for one protocol; :meth:`evaluate` scores any number of detection sets.

    ``known_object``: a boolean ``[num_objects, num_images]`` mask (see ``protocols/known_object.py``;
    e.g. from ``anno.mat`` for the official protocol), default: the objects present in each image's GT.
    ``rare_mask``: boolean per class, default ``vocab.rare_mask()`` (fewer than 10 training pairs); when
    neither is available the Rare / Non-rare means are ``None``.
    ``max_per_image`` and ``nms_threshold`` apply to ``fgahoi`` only (``None`` turns them off).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        vocab: HOIVocabulary,
        protocol: str = "fgahoi",
        *,
        known_object: np.ndarray | None = None,
        known_object_source: str | None = None,
        rare_mask: np.ndarray | None = None,
        iou_threshold: float = 0.5,
        max_per_image: int | None = 100,
        nms_threshold: float | None = 0.5,
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        self.vocab = vocab
        self.records = list(records)
        self.gt = GroundTruthArrays.from_records(self.records, vocab.num_classes)
        self.class_object = np.asarray([c.object for c in vocab.classes], dtype=np.int64)
        if known_object is None:
            known_object = known_object_from_gt(self.gt, vocab.num_objects)
            known_object_source = known_object_source or "gt_objects"
        known_object = np.asarray(known_object, dtype=bool)
        if known_object.shape != (vocab.num_objects, self.gt.num_images):
            raise ValueError(
                f"known_object mask must have shape (num_objects, num_images) = "
                f"{(vocab.num_objects, self.gt.num_images)}, got {known_object.shape}"
            )
        self.known_object = known_object
        self.known_object_source = known_object_source or "given"
        if rare_mask is None and vocab.train_counts is not None:
            rare_mask = vocab.rare_mask()
        self.rare_mask = None if rare_mask is None else np.asarray(rare_mask, dtype=bool)
        if self.rare_mask is not None and self.rare_mask.shape != (vocab.num_classes,):
            raise ValueError(f"rare_mask must have shape ({vocab.num_classes},), got {self.rare_mask.shape}")
        self.iou_threshold = float(iou_threshold)
        self.max_per_image = max_per_image
        self.nms_threshold = nms_threshold
        self._gt_known = self.known_object[self.class_object[self.gt.hoi], self.gt.image]

    @property
    def file_names(self) -> tuple[str, ...]:
        return self.gt.file_names

    @property
    def num_images(self) -> int:
        return self.gt.num_images

    def _as_arrays(self, detections) -> DetectionArrays:
        if isinstance(detections, DetectionArrays):
            return detections
        detections = list(detections)
        if len(detections) != self.num_images:
            raise ValueError(f"{len(detections)} per-image detection lists for {self.num_images} GT images")
        return DetectionArrays.from_per_image(detections)

    def select(self, det: DetectionArrays) -> DetectionArrays:
        """The detections the protocol scores: all (official), or top-k + triplet NMS (fgahoi)."""
        if self.protocol == "official":
            return det
        det = det.take(top_k_per_image(det, self.max_per_image))
        return det.take(triplet_nms(det, self.nms_threshold))

    def match(self, det: DetectionArrays, order: np.ndarray) -> np.ndarray:
        if self.protocol == "official":
            rank = np.empty(len(det), dtype=np.int64)
            rank[order] = np.arange(len(det))
            return match_official(self.gt, det, rank, self.iou_threshold)
        return match_fgahoi(self.gt, det, self.iou_threshold)

    def evaluate(self, detections: DetectionArrays | Sequence[Sequence[HOIDetection]]) -> dict[str, Any]:
        det = self._as_arrays(detections)
        det.validate(self.num_images, self.vocab.num_classes)
        num_input = len(det)
        if len(det) > 1 and bool(np.any(det.image[1:] < det.image[:-1])):
            det = det.take(canonical_order(det.image))
        det = self.select(det)
        order = score_order(det.hoi, det.scores)
        tp = self.match(det, order)

        det_known = self.known_object[self.class_object[det.hoi], det.image]
        per_setting = {}
        for setting, det_mask, gt_mask in (
            ("default", None, None),
            ("known_object", det_known, self._gt_known),
        ):
            sel = order if det_mask is None else order[det_mask[order]]
            gt_hoi = self.gt.hoi if gt_mask is None else self.gt.hoi[gt_mask]
            num_gt = np.bincount(gt_hoi, minlength=self.vocab.num_classes)
            ap, recall, num_det = per_class_ap(det.hoi[sel], tp[sel], num_gt, self.protocol)
            per_setting[setting] = (ap, recall, num_gt, num_det)
        return self._results(per_setting, num_input, len(det))

    def _results(self, per_setting: dict, num_input: int, num_evaluated: int) -> dict[str, Any]:
        splits: dict[str, np.ndarray | None] = {"full": None}
        if self.rare_mask is not None:
            splits.update(rare=self.rare_mask, non_rare=~self.rare_mask)
        results: dict[str, Any] = {"protocol": self.protocol}
        counts: dict[str, dict[str, int]] = {}
        for setting, (ap, _, _, _) in per_setting.items():
            results[setting] = {}
            counts[setting] = {}
            for split in SPLITS:
                if split in splits:
                    value, n = mean_ap(ap, splits[split])
                else:
                    value, n = math.nan, 0
                results[setting][split] = _percent(value)
                counts[setting][split] = n
        ap, recall, num_gt, num_det = per_setting["default"]
        ap_ko, recall_ko, num_gt_ko, num_det_ko = per_setting["known_object"]
        per_class = []
        for h, c in enumerate(self.vocab.classes):
            per_class.append(
                {
                    "hoi": h,
                    "name": f"{self.vocab.verbs[c.verb]} {self.vocab.objects[c.object]}",
                    "ap": _percent(ap[h]),
                    "recall": _percent(recall[h]),
                    "num_gt": int(num_gt[h]),
                    "num_det": int(num_det[h]),
                    "rare": None if self.rare_mask is None else bool(self.rare_mask[h]),
                    "ap_known_object": _percent(ap_ko[h]),
                    "recall_known_object": _percent(recall_ko[h]),
                    "num_gt_known_object": int(num_gt_ko[h]),
                    "num_det_known_object": int(num_det_ko[h]),
                }
            )
        results.update(
            per_class=per_class,
            num_images=self.num_images,
            num_detections=num_input,
            num_detections_evaluated=num_evaluated,
            num_classes_averaged=counts,
            settings={
                "iou_threshold": self.iou_threshold,
                "max_per_image": self.max_per_image if self.protocol == "fgahoi" else None,
                "nms_threshold": self.nms_threshold if self.protocol == "fgahoi" else None,
                "known_object_source": self.known_object_source,
            },
        )
        return results


def evaluate_hoi_detection(
    records: Sequence[ImageRecord],
    detections: DetectionArrays | Sequence[Sequence[HOIDetection]],
    vocab: HOIVocabulary,
    protocol: str = "fgahoi",
    **kwargs,
) -> dict[str, Any]:
    """One-shot :class:`HOIEvaluator` (keyword arguments as its constructor)."""
    return HOIEvaluator(records, vocab, protocol, **kwargs).evaluate(detections)


def format_results_table(results: dict[str, Any]) -> str:
    """A short fixed-width table of the six paper numbers."""

    def cell(v):
        return f"{v:8.2f}" if v is not None else f"{'–':>8}"

    lines = [
        f"protocol: {results['protocol']}   images: {results['num_images']}   "
        f"detections: {results['num_detections']} ({results['num_detections_evaluated']} scored)",
        f"{'':14}{'Full':>8}{'Rare':>8}{'Non-rare':>10}",
    ]
    for setting, label in (("default", "Default"), ("known_object", "Known Object")):
        row = results[setting]
        lines.append(f"{label:14}{cell(row['full'])}{cell(row['rare'])}  {cell(row['non_rare'])}")
    return "\n".join(lines)
