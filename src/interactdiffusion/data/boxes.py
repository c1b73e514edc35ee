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
