"""FGAHOI (Ma et al., TPAMI 2023), the paper's HOI scorer, as a native ``HOIDetector``.

``swin`` (backbone), ``deformable_attention`` (plain-PyTorch multi-scale deformable attention), ``anchors``
(FGAHOI's multi-scale sampling and hierarchical / task-aware merging), ``transformer``, ``model`` (the
network under FGAHOI's parameter names) and ``detector`` (checkpoints, post-processing, factories).
"""

from .detector import (
    FGAHOIDetector,
    build_fgahoi_detector,
    build_random_fgahoi_detector,
    fgahoi_postprocess,
    load_fgahoi,
    load_fgahoi_checkpoint,
    save_fgahoi_checkpoint,
)
from .model import FGAHOI, FGAHOIConfig, FGAHOIOutputs

__all__ = [
    "FGAHOI",
    "FGAHOIConfig",
    "FGAHOIDetector",
    "FGAHOIOutputs",
    "build_fgahoi_detector",
    "build_random_fgahoi_detector",
    "fgahoi_postprocess",
    "load_fgahoi",
    "load_fgahoi_checkpoint",
    "save_fgahoi_checkpoint",
]
