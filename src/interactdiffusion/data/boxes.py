"""Box conventions of the HICO-DET files, and the one we use inside.

HICO-DET (``anno_bbox.mat``, and the PPDM/QPIC and fredzzhang json files derived from it) stores
boxes as **1-based inclusive pixel indices**: ``x1..x2`` are the first and last pixel columns the box
covers, so its width is ``x2 - x1 + 1``. Inside the project every box is **continuous, 0-based
xyxy**: pixel ``i`` (1-based) is the unit interval ``[i - 1, i]``, hence

    continuous = (x1 - 1, y1 - 1, x2, y2)        one_based = (x1 + 1, y1 + 1, x2, y2)

This keeps areas equal to the +1 convention of the official evaluation (``(x2-x1+1)*(y2-y1+1)``),
makes a box that covers the whole image exactly ``(0, 0, W, H)``, and lets crops, resizes and flips
act on the box with plain affine maps. All three parsers convert once, in
``formats.common.RecordBuilder.finish`` (the vectorised form of ``one_based_to_continuous``), and the
writers convert back with ``continuous_to_one_based``, so the formats parse to identical records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Box = tuple[float, float, float, float]


def one_based_to_continuous(box: Sequence[float]) -> Box:
    """``[x1, y1, x2, y2]`` in 1-based inclusive pixels → continuous 0-based xyxy."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1 - 1.0, y1 - 1.0, x2, y2)


def continuous_to_one_based(box: Sequence[float]) -> Box:
    """Continuous 0-based xyxy → 1-based inclusive pixels (exact inverse of the above)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1 + 1.0, y1 + 1.0, x2, y2)


def plain_number(value: float) -> int | float:
    """An integral float as ``int`` (how the json files write pixel indices), anything else unchanged."""
    return int(value) if float(value).is_integer() else float(value)


def box_area(box: Sequence[float]) -> float:
    x1, y1, x2, y2 = box
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def clamp_box(box: Sequence[float], width: float, height: float) -> Box:
    x1, y1, x2, y2 = box
    return (
        min(max(x1, 0.0), width),
        min(max(y1, 0.0), height),
        min(max(x2, 0.0), width),
        min(max(y2, 0.0), height),
    )


def is_valid_box(box: Sequence[float]) -> bool:
    """Finite with positive width and height."""
    return all(math.isfinite(v) for v in box) and box[2] > box[0] and box[3] > box[1]
