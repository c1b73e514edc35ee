"""The official protocol (ho-rcnn ``eval_one.m`` / ``VOCevaldet_bboxpair.m``), vectorised.

Per HOI class, detections of all images are sorted by score; each is compared within its image with
every GT pair of the class by ``min(IoU_human, IoU_object)`` (+1 pixel IoU, detections shifted by +1);
the GT with the largest value wins, **already matched ones included** (ties: the first in annotation
order). At ``>= 0.5`` the detection is a TP if that GT is still free, else a FP (a duplicate); below,
a FP. No top-k, no NMS.

Because the chosen GT does not depend on what was matched before, the loop collapses: a detection is
a TP exactly when it is the best-scored one among the detections that picked the same GT with
``>= 0.5``. That is a join, a segment arg-max and a ``unique`` — no per-detection Python.
"""

from __future__ import annotations

import numpy as np

from .arrays import DetectionArrays, GroundTruthArrays
from .boxes import official_gt_boxes, official_pair_iou
from .grouping import first_of_runs, join_on_key


def match_official(
    gt: GroundTruthArrays, det: DetectionArrays, rank: np.ndarray, iou_threshold: float = 0.5
) -> np.ndarray:
    """TP flag per detection. ``rank``: position of each detection in its class's score order."""
    tp = np.zeros(len(det), dtype=bool)
    if len(det) == 0 or len(gt.image) == 0:
        return tp
    d, g = join_on_key(det.image * gt.num_classes + det.hoi, gt.keys)
    if len(d) == 0:
        return tp
    shift = 1.0  # MATLAB: det_bb = det_bb + 1 (zero-based to one-based)
    ov_h = official_pair_iou(det.human_boxes[d] + shift, official_gt_boxes(gt.human_index[g]))
    ov_o = official_pair_iou(det.object_boxes[d] + shift, official_gt_boxes(gt.object_index[g]))
    ov = np.minimum(ov_h, ov_o)

    # Best GT per detection: segment maximum, then its first occurrence (strict ``>`` in MATLAB).
    starts = np.flatnonzero(first_of_runs(d))
    ov_max = np.maximum.reduceat(ov, starts)
    seg = np.cumsum(first_of_runs(d)) - 1
    at_max = np.flatnonzero(ov == ov_max[seg])
    first = at_max[first_of_runs(d[at_max])]
    best_det, best_gt, best_ov = d[first], g[first], ov[first]

    hit = best_ov >= iou_threshold
    cand_det, cand_gt = best_det[hit], best_gt[hit]
    by_rank = np.argsort(rank[cand_det], kind="stable")
    cand_det, cand_gt = cand_det[by_rank], cand_gt[by_rank]
    _, first_claim = np.unique(cand_gt, return_index=True)
    tp[cand_det[first_claim]] = True
    return tp
