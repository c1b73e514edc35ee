"""What the three annotation parsers share: errors, validation and the record builder.

Every parser hands raw 1-based boxes and ids to ``RecordBuilder``, which converts boxes once (the
convention of ``..boxes``: ``(x1 - 1, y1 - 1, x2, y2)``), clamps or drops bad ones (counted in
``skipped``) and raises ``AnnotationError`` naming the file and the record for anything that cannot be
repaired (HOI ids out of range, unknown names).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...vocab import HOIVocabulary
from ..records import ImageRecord, PairRecord

ACCEPTED_FORMATS = (
    "accepted formats:\n"
    "  - anno_bbox.mat: the official HICO-DET annotations (MATLAB; bbox_train, bbox_test, list_action)\n"
    "  - trainval_hico.json / test_hico.json: PPDM/QPIC layout (a list of {file_name, annotations, "
    "hoi_annotation})\n"
    "  - instances_train2015.json / instances_test2015.json: fredzzhang/hicodet layout ({annotation, "
    "filenames, size, objects, verbs, correspondence, ...})"
)


class AnnotationError(ValueError):
    """An annotation file that cannot be used as it is; the message names the file and the record."""


class UnknownFormatError(AnnotationError):
    """A file in none of the accepted formats."""

    def __init__(self, path: str | Path, why: str):
        super().__init__(f"{path}: not a HICO-DET annotation file ({why}).\n{ACCEPTED_FORMATS}")


def as_int(value, what: str, where: str) -> int:
    """An integral number (MATLAB doubles included) as ``int``; anything else is an error."""
    if type(value) is int:  # the common cases, on the hot path of every parser
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    try:
        number = float(np.asarray(value).reshape(-1)[0]) if isinstance(value, np.ndarray) else float(value)
    except (TypeError, ValueError, IndexError):
        raise AnnotationError(f"{where}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(number) or not number.is_integer():
        raise AnnotationError(f"{where}: {what} must be an integer, got {value!r}")
    return int(number)


class RecordBuilder:
    """Builds validated ``ImageRecord``s for one file and counts everything skipped or repaired.

    Parsers only walk their layout and hand over raw values (``image``, then ``add_pair`` per pair);
    ``finish`` checks ids, converts, clamps and filters all boxes at once with numpy, which keeps a
    full-size HICO-DET file fast to parse.
    """

    def __init__(self, source: str | Path, vocab: HOIVocabulary):
        self.source = str(source)
        self.vocab = vocab
        self.skipped: Counter[str] = Counter()
        self.listed_counts = np.zeros(vocab.num_classes, dtype=np.int64)  # visible pairs as listed
        self.records: list[ImageRecord] = []
        self._indices: list[int] = []  # position of each record in the file
        self._pair_image: list[int] = []  # record (list position) of each pair
        self._labels: list[str | None] = []
        self._boxes: list[Sequence[float]] = []  # 8 raw 1-based numbers per pair: human, then object
        self._hoi: list = []
        self._expected: list[tuple[int, int] | None] = []  # (verb, object) the file claims, if it does

    def where(self, index: int, file_name: str | None = None) -> str:
        name = f" ({file_name})" if file_name else ""
        return f"{self.source}: image {index}{name}"

    def image(self, index: int, file_name, width, height) -> ImageRecord:
        if not isinstance(file_name, str) or not file_name.strip():
            raise AnnotationError(f"{self.where(index)}: missing or empty file name ({file_name!r})")
        where = self.where(index, file_name)
        w, h = as_int(width, "image width", where), as_int(height, "image height", where)
        if w <= 0 or h <= 0:
            raise AnnotationError(f"{where}: image size must be positive, got {w}x{h}")
        record = ImageRecord(file_name.strip(), w, h, [])
        self.records.append(record)
        self._indices.append(index)
        return record

    def check_hoi(self, hoi: int, where: str) -> int:
        """``hoi`` is 0-based; messages quote it 1-based as the files' own documentation does."""
        if not 0 <= hoi < self.vocab.num_classes:
            raise AnnotationError(
                f"{where}: HOI id {hoi + 1} is outside 1..{self.vocab.num_classes} (the vocabulary's classes)"
            )
        return hoi

    def add_pair(
        self,
        human: Sequence[float],
        obj: Sequence[float],
        hoi,
        label: str | None = None,
        expected: tuple[int, int] | None = None,
    ) -> None:
        """One pair of the latest image: raw 1-based boxes, 0-based HOI id (checked in ``finish``).

        ``label`` locates the pair in error messages (default "pair k"); ``expected`` is the (verb,
        object) the file states next to the HOI id, which must agree with the vocabulary.
        """
        if len(human) != 4 or len(obj) != 4:
            raise AnnotationError(
                f"{self._where_pair(len(self._hoi), label)}: a box needs 4 numbers [x1, y1, x2, y2], "
                f"got {list(human)!r} / {list(obj)!r}"
            )
        self._pair_image.append(len(self.records) - 1)
        self._labels.append(label)
        self._boxes.append((*human, *obj))
        self._hoi.append(hoi)
        self._expected.append(expected)

    def _where_pair(self, pair: int, label: str | None = None) -> str:
        position = self._pair_image[pair] if pair < len(self._pair_image) else len(self.records) - 1
        record = self.records[position]
        if label is None:
            label = f"pair {self._pair_image[:pair].count(position)}"
        return f"{self.where(self._indices[position], record.file_name)}, {label}"

    def _first_error(self, bad: np.ndarray, message) -> None:
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise AnnotationError(f"{self._where_pair(k, self._labels[k])}: {message(k)}")

    def finish(self) -> list[ImageRecord]:
        count = len(self._hoi)
        try:
            hoi = np.asarray(self._hoi, dtype=np.float64).reshape(count)
        except (TypeError, ValueError):
            bad = next(k for k, h in enumerate(self._hoi) if not _numbers([h]))
            raise AnnotationError(f"{self._where_pair(bad, self._labels[bad])}: HOI id must be a number, "
                                  f"got {self._hoi[bad]!r}") from None
        self._first_error(~np.isfinite(hoi) | (hoi != np.round(hoi)),
                          lambda k: f"HOI id must be an integer, got {self._hoi[k]!r}")
        hoi = hoi.astype(np.int64)
        n = self.vocab.num_classes
        self._first_error((hoi < 0) | (hoi >= n),
                          lambda k: f"HOI id {hoi[k] + 1} is outside 1..{n} (the vocabulary's classes)")
        verbs = np.array([c.verb for c in self.vocab.classes], dtype=np.int64)[hoi] if count else hoi
        objects = np.array([c.object for c in self.vocab.classes], dtype=np.int64)[hoi] if count else hoi
        claimed = [k for k, e in enumerate(self._expected) if e is not None and e != (verbs[k], objects[k])]
        if claimed:
            k = claimed[0]
            verb, obj = self._expected[k]
            raise AnnotationError(
                f"{self._where_pair(k, self._labels[k])}: verb {self.vocab.verbs[verb]!r} / object "
                f"{self.vocab.objects[obj]!r} do not match HOI id {hoi[k]} "
                f"({self.vocab.verbs[verbs[k]]} {self.vocab.objects[objects[k]]})"
            )
        np.add.at(self.listed_counts, hoi, 1)

        try:
            boxes = np.asarray(self._boxes, dtype=np.float64).reshape(count, 2, 4).copy()
        except (TypeError, ValueError):
            bad = next(k for k, b in enumerate(self._boxes) if not _numbers(b))
            raise AnnotationError(f"{self._where_pair(bad, self._labels[bad])}: box values must be numbers, "
                                  f"got {list(self._boxes[bad])!r}") from None
        boxes[..., :2] -= 1.0  # 1-based inclusive → continuous 0-based (see ..boxes)
        finite = np.isfinite(boxes).all(axis=(1, 2))
        image = np.asarray(self._pair_image, dtype=np.int64)
        size = np.array([(r.width, r.height) for r in self.records], dtype=np.float64).reshape(-1, 2)
        limits = np.tile(size[image], 2)[:, None, :] if count else np.zeros((0, 1, 4))
        with np.errstate(invalid="ignore"):
            clamped = np.clip(boxes, 0.0, limits)
            changed = (clamped != boxes).any(axis=2) & finite[:, None]
            empty = ((clamped[..., 2] <= clamped[..., 0]) | (clamped[..., 3] <= clamped[..., 1])).any(axis=1)
        keep = finite & ~empty
        for key, value in (("pair_with_non_finite_box", (~finite).sum()),
                           ("box_clamped_to_image", changed.sum()),
                           ("pair_with_degenerate_box", (finite & empty).sum())):
            if value:
                self.skipped[key] += int(value)

        columns = [clamped[keep, b, i].tolist() for b in range(2) for i in range(4)]
        pairs = map(PairRecord, zip(*columns[:4]), zip(*columns[4:]), hoi[keep].tolist(), verbs[keep].tolist(),
                    objects[keep].tolist())
        for position, pair in zip(image[keep].tolist(), pairs):
            self.records[position].pairs.append(pair)
        empty_images = sum(1 for r in self.records if not r.pairs)
        if empty_images:
            self.skipped["image_without_visible_pair (kept, flagged)"] += empty_images
        return self.records


def _numbers(values) -> bool:
    try:
        return all(isinstance(float(v), float) for v in values)
    except (TypeError, ValueError):
        return False


def train_counts_of(records: Sequence[ImageRecord], num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes, dtype=np.int64)
    for record in records:
        for pair in record.pairs:
            counts[pair.hoi] += 1
    return counts


def with_counts(vocab: HOIVocabulary, counts) -> HOIVocabulary:
    return HOIVocabulary(list(vocab.objects), list(vocab.verbs), list(vocab.verb_ing), list(vocab.classes),
                         None if counts is None else np.asarray(counts, dtype=np.int64))
