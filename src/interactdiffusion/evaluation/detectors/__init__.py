"""HOI detectors that score images, behind one interface (``HOIDetector``) and one factory (``build_detector``).

Only the interface and the registry are imported here; a detector's module (and its weights) loads when
``build_detector`` asks for it.
"""

from .base import Box, HOIDetection, HOIDetector, ImageDetections, as_image_detections
from .registry import (
    DetectorWeightsError,
    MissingDetectorWeightsError,
    available_detectors,
    build_detector,
    register_detector,
)

__all__ = [
    "Box",
    "DetectorWeightsError",
    "HOIDetection",
    "HOIDetector",
    "ImageDetections",
    "as_image_detections",
    "MissingDetectorWeightsError",
    "available_detectors",
    "build_detector",
    "register_detector",
]
