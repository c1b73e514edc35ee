"""The analytic HOI-Shapes detector: entities by colour, the verb from the between region.

No learning: HOI-Shapes draws every entity class in its own palette colour and every verb as a bar
of its own colour filling the between box of its subject and object (see ``world.py``), so an image
is read back in three steps:

1. each pixel is explained as a blend of the background with one palette colour (a blurred edge,
   a faint shape) and goes to the colour whose blend explains it best when that colour covers at
   least half of it, to the background otherwise, or to "unknown" when no blend comes within
   ``max_color_distance`` (a blend of two colours, noise);
2. persons and objects are the connected components (8-neighbourhood) of each entity colour with
   at least ``min_area`` pixels; a component's bounding box is the entity's box;
3. for every (person, object) pair the between box of their two boxes (REFERENCE §1) is read: the
   score of verb ``v`` is the mean over that region of the soft assignment of each pixel to ``v``'s
   colour (a softmax, temperature ``softness``, over the squared distances to the background and to
   the blend lines of step 1). Pairs scoring at least ``min_score`` become detections of the HOI
   class (verb, object kind); nothing else is reported, and no pair is reported twice for a verb.

On real HOI-Shapes images true pairs score ≈ 1 and every other pair below the generator's ambiguity
bound, so the ranking is exact. Generated images are blurrier and off-colour: the soft assignment and
the thresholds make the reading degrade gracefully instead of failing outright.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ..evaluation.detectors.base import HOIDetection
from ..vocab import HOIVocabulary
from .world import BACKGROUND, PERSON, ShapesWorld

_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


class ShapesDetector:
    """An :class:`~interactdiffusion.evaluation.detectors.base.HOIDetector` for HOI-Shapes images.

    ``vocabulary``: the HOI classes detections are reported in (the one parsed from the data set's
    annotations, or a path to its ``hoi_vocabulary.json``); by default the HOI-Shapes world's own.
    ``min_area`` is a fraction of the image area so the same setting works at 32, 48 or 64 pixels.
    """

    name = "hoi_shapes"

    def __init__(
        self,
        vocabulary: HOIVocabulary | str | Path | None = None,
        *,
        max_color_distance: float = 60.0,
        softness: float = 32.0,
        min_area: float = 0.006,
        min_side: int = 2,
        min_score: float = 0.3,
        world: ShapesWorld | None = None,
    ):
        self.world = world or ShapesWorld()
        if vocabulary is None:
            vocabulary = self.world.vocabulary()
        elif isinstance(vocabulary, (str, Path)):
            vocabulary = HOIVocabulary.load(vocabulary)
        self.vocab = vocabulary
        self.max_color_distance = float(max_color_distance)
        self.softness = float(softness)
        self.min_area = float(min_area)
        self.min_side = int(min_side)
        self.min_score = float(min_score)

        palette = self.world.palette()
        self.background = np.array(BACKGROUND, dtype=np.float32)
        self.directions = np.array([c for _, _, c in palette], dtype=np.float32) - self.background
        self.direction_norms = (self.directions**2).sum(-1)
        # palette index (0 = background) of each entity kind and verb
        self.entity_labels = {name: k + 1 for k, (role, name, _) in enumerate(palette) if role == "entity"}
        self.verb_labels = {name: k + 1 for k, (role, name, _) in enumerate(palette) if role == "verb"}
        # HOI id per (verb label, object kind), only for classes the vocabulary knows
        self.hoi_of: dict[tuple[str, str], int] = {}
        for verb in self.verb_labels:
            for kind in self.entity_labels:
                if kind == PERSON:
                    continue
                try:
                    v, o = self.vocab.verb_index(verb), self.vocab.object_index(kind)
                except KeyError:
                    continue
                if self.vocab.has_pair(v, o):
                    self.hoi_of[(verb, kind)] = self.vocab.hoi_id(v, o)

    # -- reading one image ----------------------------------------------------------------------
    def _pixel_classes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hard labels [H, W]: 0 background, k palette colour, -1 unknown; soft [H, W, K+1]).

        A pixel is explained as a blend ``bg + a * (colour - bg)`` of the background with one palette
        colour, which is what a blurred edge or a faint generated shape is. It takes the colour whose
        blend line passes closest, provided it covers at least half the pixel (``a >= 0.5``);
        otherwise it is background. A pixel farther than ``max_color_distance`` from every line it
        could belong to is unknown (e.g. a blend of two colours). ``soft`` is the softmax of the
        negative squared residuals over those candidates and the background.
        """
        x = image.astype(np.float32) - self.background
        proj = x @ self.directions.T  # [H, W, K]
        alpha = np.clip(proj / self.direction_norms, 0.0, 1.0)
        x2 = (x * x).sum(-1, keepdims=True)
        resid = np.maximum(x2 - 2 * alpha * proj + alpha**2 * self.direction_norms, 0.0)
        resid = np.where(alpha >= 0.5, resid, np.inf)
        best = resid.argmin(-1)
        best_resid = np.take_along_axis(resid, best[..., None], -1)[..., 0]
        labels = np.where(np.isfinite(best_resid), best + 1, 0)
        labels[np.isfinite(best_resid) & (best_resid > self.max_color_distance**2)] = -1
        all_resid = np.concatenate([x2, resid], axis=-1)
        logits = -all_resid / (2.0 * self.softness**2)
        logits -= logits.max(-1, keepdims=True)
        soft = np.exp(logits)
        soft /= soft.sum(-1, keepdims=True)
        return labels, soft

    def find_entities(self, labels: np.ndarray) -> list[tuple[str, tuple[int, int, int, int]]]:
        """``(kind, (x0, y0, x1, y1))`` per entity, in pixel units (continuous 0-based xyxy)."""
        h, w = labels.shape
        min_pixels = max(1.0, self.min_area * h * w)
        found = []
        for kind, label in self.entity_labels.items():
            mask = labels == label
            if not mask.any():
                continue
            components, n = ndimage.label(mask, structure=_EIGHT_NEIGHBOURS)
            if n == 0:
                continue
            areas = np.bincount(components.ravel(), minlength=n + 1)
            for k, sl in enumerate(ndimage.find_objects(components), start=1):
                if sl is None or areas[k] < min_pixels:
                    continue
                y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
                if x1 - x0 < self.min_side or y1 - y0 < self.min_side:
                    continue
                found.append((kind, (x0, y0, x1, y1)))
        return found

    def read(self, image: np.ndarray) -> list[tuple[tuple, tuple, int, float]]:
        """``(human_box, object_box, hoi, score)`` for one ``[H, W, 3]`` uint8 image, in its pixels."""
        labels, soft = self._pixel_classes(image)
        entities = self.find_entities(labels)
        persons = [box for kind, box in entities if kind == PERSON]
        objects = [(kind, box) for kind, box in entities if kind != PERSON]
        verb_channels = {verb: soft[:, :, label] for verb, label in self.verb_labels.items()}
        out = []
        for hb in persons:
            for kind, ob in objects:
                xs = sorted((hb[0], hb[2], ob[0], ob[2]))
                ys = sorted((hb[1], hb[3], ob[1], ob[3]))
                x0, x1, y0, y1 = xs[1], xs[2], ys[1], ys[2]
                if x1 <= x0 or y1 <= y0:
                    continue
                for verb, channel in verb_channels.items():
                    hoi = self.hoi_of.get((verb, kind))
                    if hoi is None:
                        continue
                    score = float(channel[y0:y1, x0:x1].mean())
                    if score >= self.min_score:
                        out.append((hb, ob, hoi, score))
        return out

    # -- the HOIDetector interface --------------------------------------------------------------
    @staticmethod
    def _as_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
        array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.ndim != 3 or 3 not in (array.shape[0], array.shape[-1]):
            raise ValueError(f"expected an image [3, H, W], got shape {array.shape}")
        if array.shape[0] == 3:  # the interface's [3, H, W]; [H, W, 3] arrays are accepted as they are
            array = array.transpose(1, 2, 0)
        if array.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, got {array.dtype}")
        return array

    def detect(
        self, images: torch.Tensor | Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]]
    ) -> list[list[HOIDetection]]:
        if len(images) != len(sizes):
            raise ValueError(f"{len(images)} images but {len(sizes)} sizes")
        results = []
        for image, (width, height) in zip(images, sizes):
            array = self._as_hwc(image)
            sx, sy = width / array.shape[1], height / array.shape[0]
            detections = []
            for hb, ob, hoi, score in self.read(array):
                detections.append(
                    HOIDetection(
                        human_box=(hb[0] * sx, hb[1] * sy, hb[2] * sx, hb[3] * sy),
                        object_box=(ob[0] * sx, ob[1] * sy, ob[2] * sx, ob[3] * sy),
                        hoi=hoi,
                        score=score,
                    )
                )
            detections.sort(key=lambda d: -d.score)
            results.append(detections)
        return results


def build_shapes_detector(
    vocabulary: HOIVocabulary | str | Path | None = None, device=None, **kwargs
) -> ShapesDetector:
    """Factory for ``build_detector`` (the eval command passes ``vocabulary`` and ``device``; CPU only)."""
    return ShapesDetector(vocabulary, **kwargs)


def evaluate_detector(
    root: str | Path,
    detector: ShapesDetector | None = None,
    protocol: str = "official",
    split: str = "test",
    annotations: str | Path | None = None,
) -> dict:
    """Score ``detector`` on the written images of a HOI-Shapes folder through the HICO-DET evaluator.

    Parses ``anno_bbox.mat`` with the ordinary parser and reads the PNGs from disk, exactly what the
    eval command sees. Adds ``ms_per_image`` (detector time only) to the evaluator's results.
    """
    import time

    from PIL import Image

    from ..data.annotations import load_annotations
    from ..evaluation.hoi_map import HOIEvaluator

    root = Path(root)
    parsed = load_annotations(annotations or root / "anno_bbox.mat", split, cache_dir=False)
    detector = detector or ShapesDetector(parsed.vocab)
    image_dir = root / "images" / f"{split}2015"
    detections, seconds = [], 0.0
    for record in parsed.records:
        with Image.open(image_dir / record.file_name) as im:
            image = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
        start = time.perf_counter()
        detections.extend(detector.detect([image], [(record.width, record.height)]))
        seconds += time.perf_counter() - start
    results = HOIEvaluator(parsed.records, parsed.vocab, protocol).evaluate(detections)
    results["ms_per_image"] = 1000.0 * seconds / max(1, len(parsed.records))
    return results
