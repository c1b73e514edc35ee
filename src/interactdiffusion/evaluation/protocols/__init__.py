"""The two HICO-DET mAP protocols (REFERENCE §5), split into small vectorised pieces.

``boxes``: box conventions and the IoU formulas of each protocol; ``arrays``: ground truth and
detections as flat numpy columns; ``grouping``: joins and segment reductions; ``official`` and
``fgahoi``: per-protocol selection and matching; ``average_precision``: 11-point AP and the means;
``known_object``: the image masks of the Known Object setting. ``evaluation.hoi_map`` composes them.
"""
