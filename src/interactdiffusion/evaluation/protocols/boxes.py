"""Box conventions of the two protocols and their IoU formulas, vectorised over pairs of boxes.

Our records hold continuous 0-based xyxy boxes, converted by the parsers from HICO-DET's 1-based
inclusive pixel indices as ``continuous = (x1 - 1, y1 - 1, x2, y2)`` (``data/boxes.py``). The
evaluators never see that space; they see the original integers again:

* the *pixel-index* box (0-based inclusive, what GGNet's ``anno_list.json`` stores):
  ``(x1 - 1, y1 - 1, x2 - 1, y2 - 1)`` of the 1-based box, i.e. ``(a, b, c - 1, d - 1)`` of our
  continuous ``(a, b, c, d)`` (snapped to the nearest integer when within 1e-6, so parsed boxes give
  back exact integers);
* ``official`` compares with the 1-based box = pixel index + 1 (the ``anno_bbox.mat`` values) and adds
  1 to every detection coordinate (MATLAB ``det_bb + 1``: detections are taken as 0-based);
* ``fgahoi`` compares with ``int(v - 1)`` of the 1-based values = the truncated pixel index, and uses
  detections as given.

Each formula keeps the operation order of the code it reproduces, so that results agree to the bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ...data.records import ImageRecord, PairRecord

SNAP_TOLERANCE = 1e-6
FGAHOI_IOU_EPSILON = 1e-6  # GGNet/QAHOI ``compute_iou`` divides by ``union + 1e-6``


def continuous_to_pixel_index(boxes: np.ndarray) -> np.ndarray:
    """Continuous 0-based xyxy [..., 4] → 0-based inclusive pixel indices (1-based values − 1)."""
    out = np.asarray(boxes, dtype=np.float64).copy()
    out[..., 2:] -= 1.0
    nearest = np.round(out)
    close = np.abs(out - nearest) <= SNAP_TOLERANCE
    out[close] = nearest[close]
    return out


def pixel_index_to_continuous(boxes: np.ndarray) -> np.ndarray:
    out = np.asarray(boxes, dtype=np.float64).copy()
    out[..., 2:] += 1.0
    return out


def official_gt_boxes(pixel_index: np.ndarray) -> np.ndarray:
    """The 1-based inclusive boxes of ``anno_bbox.mat``."""
    return pixel_index + 1.0


def fgahoi_gt_boxes(pixel_index: np.ndarray) -> np.ndarray:
    """``int(v - 1)`` of the 1-based values (truncation toward zero, as Python's ``int``)."""
    return np.trunc(pixel_index)


def _columns(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]


def official_pair_iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of row-aligned box pairs as ``VOCevaldet_bboxpair.m`` computes it (1-based, +1 pixel).

    ``det`` must already carry the +1 shift. A pair whose intersection has no positive width and
    height scores 0 (MATLAB skips it, which is the same for the ``>= 0.5`` test).
    """
    dx1, dy1, dx2, dy2 = _columns(det)
    gx1, gy1, gx2, gy2 = _columns(gt)
    iw = np.minimum(dx2, gx2) - np.maximum(dx1, gx1) + 1.0
    ih = np.minimum(dy2, gy2) - np.maximum(dy1, gy1) + 1.0
    overlap = (iw > 0) & (ih > 0)
    inter = iw * ih
    union = (dx2 - dx1 + 1.0) * (dy2 - dy1 + 1.0) + (gx2 - gx1 + 1.0) * (gy2 - gy1 + 1.0) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where(overlap, iou, 0.0)


def _fgahoi_area(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
    """``(x2-x1+1)*(y2-y1+1)``, and 0 when ``x2 <= x1`` or ``y2 <= y1`` (GGNet ``compute_area``)."""
    empty = (x2 <= x1) | (y2 <= y1)
    return np.where(empty, 0.0, (x2 - x1 + 1.0) * (y2 - y1 + 1.0))


def fgahoi_pair_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of row-aligned pairs as the GGNet/QAHOI/FGAHOI matcher computes it (``+ 1e-6`` included)."""
    px1, py1, px2, py2 = _columns(pred)
    gx1, gy1, gx2, gy2 = _columns(gt)
    inter = _fgahoi_area(np.maximum(px1, gx1), np.maximum(py1, gy1), np.minimum(px2, gx2), np.minimum(py2, gy2))
    union = _fgahoi_area(px1, py1, px2, py2) + _fgahoi_area(gx1, gy1, gx2, gy2) - inter
    return inter / (union + FGAHOI_IOU_EPSILON)


def nms_pair_overlap(
    sub_a: np.ndarray, obj_a: np.ndarray, sub_b: np.ndarray, obj_b: np.ndarray
) -> np.ndarray:
    """Triplet-NMS overlap IoU_sub × IoU_obj of the CDN/QAHOI ``pairwise_nms`` (``a`` scores higher).

    Areas use the +1 convention without clamping, intersections ``max(0, w + 1)``; the product is
    evaluated as ``sub_inter / sub_union * obj_inter / obj_union``, left to right.
    """

    def inter_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ax1, ay1, ax2, ay2 = _columns(a)
        bx1, by1, bx2, by2 = _columns(b)
        w = np.maximum(0.0, np.minimum(ax2, bx2) - np.maximum(ax1, bx1) + 1.0)
        h = np.maximum(0.0, np.minimum(ay2, by2) - np.maximum(ay1, by1) + 1.0)
        inter = w * h
        union = (ax2 - ax1 + 1.0) * (ay2 - ay1 + 1.0) + (bx2 - bx1 + 1.0) * (by2 - by1 + 1.0) - inter
        return inter, union

    sub_inter, sub_union = inter_union(sub_a, sub_b)
    obj_inter, obj_union = inter_union(obj_a, obj_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return sub_inter / sub_union * obj_inter / obj_union


# -- GT for generated images --------------------------------------------------------------------
def _scale_pixel_index(box: Sequence[float], new_w: int, new_h: int, old_w: int, old_h: int) -> tuple:
    """``int(new * v / old)`` per coordinate of the truncated pixel-index box (InteractDiffusion's
    ``preprocess_generated``: ``int(new_width * bbox[0] / ori_width)``)."""
    index = fgahoi_gt_boxes(continuous_to_pixel_index(np.asarray(box, dtype=np.float64)))
    x1, y1, x2, y2 = (float(v) for v in index)
    return (
        math.trunc(new_w * x1 / old_w),
        math.trunc(new_h * y1 / old_h),
        math.trunc(new_w * x2 / old_w),
        math.trunc(new_h * y2 / old_h),
    )


def rescale_records(
    records: Sequence[ImageRecord],
    size: tuple[int, int] | Sequence[tuple[int, int]] = (512, 512),
) -> list[ImageRecord]:
    """Ground truth for generated ``W'×H'`` images (REFERENCE §5).

    The original pixel-index boxes (0-based integers, ``int(v - 1)`` of the 1-based values) are scaled
    by ``W'/W`` and ``H'/H`` and truncated to int, exactly as the paper's evaluation rewrote
    ``anno_list.json``. The result is returned as ordinary records (continuous boxes that map back to
    those integers, ``width``/``height`` = ``W'``/``H'``) so every protocol evaluates them unchanged.
    ``size`` is one ``(W', H')`` for all images or one per record.
    """
    if len(size) == 2 and all(isinstance(v, (int, np.integer)) for v in size):
        sizes = [tuple(size)] * len(records)  # type: ignore[list-item]
    else:
        sizes = [tuple(s) for s in size]  # type: ignore[union-attr]
        if len(sizes) != len(records):
            raise ValueError(f"{len(sizes)} sizes for {len(records)} records")
    out = []
    for record, (new_w, new_h) in zip(records, sizes):
        new_w, new_h = int(new_w), int(new_h)
        if new_w <= 0 or new_h <= 0:
            raise ValueError(f"{record.file_name}: target size must be positive, got {(new_w, new_h)}")

        def scaled(box, w=new_w, h=new_h, r=record):
            index = _scale_pixel_index(box, w, h, r.width, r.height)
            return tuple(float(v) for v in pixel_index_to_continuous(np.asarray(index, dtype=np.float64)))

        pairs = [
            PairRecord(scaled(p.human_box), scaled(p.object_box), p.hoi, p.verb, p.object) for p in record.pairs
        ]
        out.append(ImageRecord(record.file_name, new_w, new_h, pairs))
    return out
