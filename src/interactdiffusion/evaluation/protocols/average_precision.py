"""VOC-2007 11-point AP per class and the Full / Rare / Non-rare means, per protocol.

The 11 recall thresholds are not the same floats in the two reference implementations, and it shows
on classes with few GT pairs (a recall of exactly 3/5 = 0.6 counts at ``t = 0.6`` in MATLAB, not in
numpy):

* MATLAB ``0:0.1:1`` builds the first half as ``k*0.1`` and the second as ``1 - (10-k)*0.1``, so
  0.6, 0.7, 0.8, 0.9 are the doubles nearest to the decimals (only 0.3 is ``0.30000000000000004``);
* ``np.arange(0, 1.1, 0.1)`` gives ``k*0.1`` throughout (``0.6000000000000001``, ``0.7000000000000001``).

AP is accumulated as ``ap = ap + p/11`` in threshold order, as both references do.
"""

from __future__ import annotations

import math

import numpy as np

OFFICIAL_RECALL_THRESHOLDS: tuple[float, ...] = tuple(k * 0.1 if k <= 5 else 1 - (10 - k) * 0.1 for k in range(11))
FGAHOI_RECALL_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.arange(0, 1.1, 0.1))


def eleven_point_ap(recall: np.ndarray, precision: np.ndarray, thresholds: tuple[float, ...]) -> float:
    """``sum_t max(precision[recall >= t]) / 11`` (0 where no recall reaches t); recall nondecreasing."""
    if len(recall) == 0:
        return 0.0
    suffix_max = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, np.asarray(thresholds), side="left")
    ap = 0.0
    for idx in first.tolist():
        p = float(suffix_max[idx]) if idx < len(recall) else 0.0
        ap = ap + p / 11.0
    return ap


def class_ap(tp_sorted: np.ndarray, num_gt: int, protocol: str) -> tuple[float, float]:
    """(AP, recall) of one class from its TP flags in score order; NaN where undefined.

    ``official`` (MATLAB): no detections → AP 0; no GT → ``rec = tp/0`` is NaN everywhere, no threshold
    is reached, AP 0 (and counted in the means). ``fgahoi``: no detections → AP 0 (counted, GT or not);
    detections but no GT → AP NaN (left out of the means).
    """
    n = len(tp_sorted)
    if n == 0:
        return 0.0, (0.0 if num_gt > 0 else math.nan)
    if num_gt == 0:
        return (0.0 if protocol == "official" else math.nan), math.nan
    tp = np.cumsum(tp_sorted, dtype=np.int64)
    fp = np.cumsum(~tp_sorted, dtype=np.int64)
    recall = tp / num_gt
    precision = tp / (fp + tp)
    thresholds = OFFICIAL_RECALL_THRESHOLDS if protocol == "official" else FGAHOI_RECALL_THRESHOLDS
    return eleven_point_ap(recall, precision, thresholds), float(recall[-1])


def per_class_ap(
    cls_sorted: np.ndarray, tp_sorted: np.ndarray, num_gt: np.ndarray, protocol: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AP, recall and detection count per class; inputs sorted by class, then score order."""
    num_classes = len(num_gt)
    bounds = np.searchsorted(cls_sorted, np.arange(num_classes + 1))
    ap = np.empty(num_classes)
    recall = np.empty(num_classes)
    for c in range(num_classes):
        ap[c], recall[c] = class_ap(tp_sorted[bounds[c] : bounds[c + 1]], int(num_gt[c]), protocol)
    return ap, recall, np.diff(bounds)


def mean_ap(ap: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, int]:
    """Plain mean over the selected classes, NaN classes left out; (NaN, 0) when none is left.

    Summed in class order like the references (``map_ += ap``), not pairwise.
    """
    values = ap if mask is None else ap[mask]
    values = [v for v in values.tolist() if not math.isnan(v)]
    if not values:
        return math.nan, 0
    total = 0.0
    for v in values:
        total += v
    return total / len(values), len(values)
