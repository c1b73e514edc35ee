"""The FGAHOI-compatible protocol (GGNet/QAHOI evaluator that produced the paper's table), vectorised.

Per image: keep the top-100 detections by score, then triplet NMS per HOI class (a detection is
suppressed when IoU_sub × IoU_obj with a kept higher-scored one is > 0.5). Matching per image and
class in score order: the **first still-unmatched** GT pair (annotation order) with IoU_h > 0.5 and
IoU_o > 0.5, strictly; a matched GT is removed.

Greedy NMS and greedy matching are sequential only *within* an (image, class) group, so both run as
one loop over the rank inside the group (≤ 100 steps), each step handling every group at once.

Equal scores are taken in row order everywhere (the reference's top-k sort is stable; its NMS uses
``argsort()[::-1]``, whose order for ties numpy does not define).
"""

from __future__ import annotations

import numpy as np

from .arrays import DetectionArrays, GroundTruthArrays
from .boxes import fgahoi_gt_boxes, fgahoi_pair_iou, nms_pair_overlap
from .grouping import expand_ranges, first_of_runs, join_on_key, rank_within_runs, score_order


def top_k_per_image(det: DetectionArrays, k: int | None) -> np.ndarray:
    """Indices of each image's ``k`` best detections (ties: row order), in row order."""
    if len(det) == 0 or k is None:
        return np.arange(len(det))
    order = score_order(det.image, det.scores)
    keep = order[rank_within_runs(det.image[order]) < k]
    return np.sort(keep)


def triplet_nms(det: DetectionArrays, threshold: float | None) -> np.ndarray:
    """Indices of the detections that survive triplet NMS per (image, HOI class), in row order.

    Greedy, in score order inside each group: a detection is dropped when its overlap with an
    already *kept* one exceeds ``threshold``. Step ``q`` decides the ``q``-th member of every group at
    once, comparing it only with the kept members before it (stored in the group's own slots of
    ``kept_rows``), so heavy suppression costs little and memory stays at one step's pairs.
    """
    n = len(det)
    if n == 0 or threshold is None:
        return np.arange(n)
    key = det.image * (int(det.hoi.max()) + 1) + det.hoi
    order = score_order(key, det.scores)
    group = key[order]
    rank = rank_within_runs(group)
    group_start = np.arange(n, dtype=np.int64) - rank
    subs, objs = det.human_boxes[order], det.object_boxes[order]
    keep = np.ones(n, dtype=bool)
    kept_rows = np.arange(n, dtype=np.int64)  # slot group_start + i holds the group's i-th kept row
    kept_count = np.zeros(n, dtype=np.int64)  # indexed by group_start
    kept_count[group_start[rank == 0]] = 1
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max()) + 2))
    for q in range(1, int(rank.max()) + 1):
        rows = by_rank[bounds[q] : bounds[q + 1]]
        starts = group_start[rows]
        owner, slot = expand_ranges(starts, kept_count[starts])
        a, b = kept_rows[slot], rows[owner]
        overlap = nms_pair_overlap(subs[a], objs[a], subs[b], objs[b])
        suppressed = np.zeros(len(rows), dtype=bool)
        suppressed[owner[overlap > threshold]] = True
        survivors = rows[~suppressed]
        keep[rows[suppressed]] = False
        survivor_starts = group_start[survivors]
        kept_rows[survivor_starts + kept_count[survivor_starts]] = survivors
        kept_count[survivor_starts] += 1
    return np.sort(order[keep])


def match_fgahoi(gt: GroundTruthArrays, det: DetectionArrays, iou_threshold: float = 0.5) -> np.ndarray:
    """TP flag per detection (after selection): first free GT of the class with both IoUs > 0.5."""
    tp = np.zeros(len(det), dtype=bool)
    if len(det) == 0 or len(gt.image) == 0:
        return tp
    keys = det.image * gt.num_classes + det.hoi
    order = score_order(keys, det.scores)
    keys_sorted = keys[order]
    rank = rank_within_runs(keys_sorted)
    d, g = join_on_key(keys_sorted, gt.keys)  # d indexes ``order``
    if len(d) == 0:
        return tp
    rows = order[d]
    iou_h = fgahoi_pair_iou(det.human_boxes[rows], fgahoi_gt_boxes(gt.human_index[g]))
    iou_o = fgahoi_pair_iou(det.object_boxes[rows], fgahoi_gt_boxes(gt.object_index[g]))
    eligible = (iou_h > iou_threshold) & (iou_o > iou_threshold)
    d, g = d[eligible], g[eligible]
    if len(d) == 0:
        return tp
    step = rank[d]
    by_step = np.argsort(step, kind="stable")  # keeps (detection, annotation) order inside a step
    d, g, step = d[by_step], g[by_step], step[by_step]
    bounds = np.searchsorted(step, np.arange(int(step.max()) + 2))
    matched = np.zeros(len(gt.image), dtype=bool)
    matched_sorted = np.zeros(len(det), dtype=bool)
    for q in range(int(step.max()) + 1):
        lo, hi = bounds[q], bounds[q + 1]
        if lo == hi:
            continue
        free = ~matched[g[lo:hi]]
        dq, gq = d[lo:hi][free], g[lo:hi][free]
        first = first_of_runs(dq)
        matched[gq[first]] = True
        matched_sorted[dq[first]] = True
    tp[order] = matched_sorted
    return tp
