"""Pick an HOI detector by name: the eval command calls ``build_detector(kind, **kwargs)`` and nothing else.

A kind is a registered short name (``qpic``, ``qpic_random``, ``fgahoi``, ``fgahoi_random``) or an import path
``package.module:factory``, so a new detector (the analytic HOI-Shapes detector) plugs in through its Hydra
config alone::

    # configs/detector/my_detector.yaml
    _target_: interactdiffusion.evaluation.detectors.build_detector
    kind: my_package.my_module:build_my_detector
    weights: ...

or with one ``register_detector("mine", "…:build_my_detector")`` line. A factory takes keyword
arguments (the eval command passes ``vocabulary`` and ``device``) and returns an ``HOIDetector``.
Factories are imported only when asked for, so a heavy or optional detector costs nothing until used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .base import HOIDetector

_REGISTRY: dict[str, str | Callable[..., HOIDetector]] = {
    "qpic": "interactdiffusion.evaluation.detectors.qpic:build_qpic_detector",
    "qpic_random": "interactdiffusion.evaluation.detectors.qpic:build_random_qpic_detector",
    "random": "interactdiffusion.evaluation.detectors.qpic:build_random_qpic_detector",
    "fgahoi": "interactdiffusion.evaluation.detectors.fgahoi:build_fgahoi_detector",
    "fgahoi_random": "interactdiffusion.evaluation.detectors.fgahoi:build_random_fgahoi_detector",
}


class DetectorWeightsError(RuntimeError):
    """Detector weights that cannot be used (wrong container, refused pickle, wrong keys)."""


class MissingDetectorWeightsError(DetectorWeightsError, FileNotFoundError):
    """A detector weights file that is not there; the message says where to get it."""


def register_detector(name: str, factory: str | Callable[..., HOIDetector]) -> None:
    """Make ``name`` a kind; ``factory`` is a callable or its import path ``package.module:function``."""
    _REGISTRY[name] = factory


def available_detectors() -> list[str]:
    return sorted(_REGISTRY)


def _resolve(target: str) -> Callable[..., HOIDetector]:
    module_name, sep, attr = target.partition(":")
    if not sep:  # "package.module.function"
        module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import detector factory {target!r}: {err}") from err


def build_detector(kind: str, **kwargs: Any) -> HOIDetector:
    """Build the detector ``kind`` (a registered name or ``module:factory``) with ``kwargs``."""
    factory = _REGISTRY.get(kind)
    if factory is None:
        if ":" not in kind and "." not in kind:
            raise ValueError(f"unknown detector {kind!r}; available: {', '.join(available_detectors())} "
                             "(or an import path 'package.module:factory')")
        factory = kind
    if isinstance(factory, str):
        factory = _resolve(factory)
    detector = factory(**kwargs)
    if not isinstance(detector, HOIDetector):
        raise TypeError(f"detector factory for {kind!r} returned {type(detector).__name__}, "
                        "which lacks the HOIDetector interface (name, detect)")
    return detector
