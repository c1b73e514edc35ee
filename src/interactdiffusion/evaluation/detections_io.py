"""Detection files: JSONL, one detection per line, in continuous 0-based pixels of the GT image.

    {"file_name": "HICO_test2015_00000001.jpg", "hoi": 152,
     "human_box": [x1, y1, x2, y2], "object_box": [x1, y1, x2, y2], "score": 0.73}

Instead of ``hoi`` (0-based, official order) a line may give ``"verb"`` (index 0..116 or name) and
``"object"`` (internal index or name); a (verb, object) pair that is not an HOI class is dropped (the
verb-object validity mask every HICO-DET evaluator applies) and counted. Any other problem is an error
naming the file, the line and the field. Floats are written with ``repr`` precision, so a file read
back gives the same numbers to the bit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np

from ..atomic import write_file_atomic
from ..vocab import HOIVocabulary
from .detectors.base import HOIDetection, ImageDetections
from .protocols.arrays import DetectionArrays

REQUIRED_FIELDS = ("file_name", "human_box", "object_box", "score")

SCHEMA_HELP = """\
detections JSONL: one detection per line, e.g.
  {"file_name": "HICO_test2015_00000001.jpg", "hoi": 152,
   "human_box": [x1, y1, x2, y2], "object_box": [x1, y1, x2, y2], "score": 0.73}
  file_name  the GT image's name (a generated .png of a .jpg matches by its stem)
  hoi        0-based HOI class in the official order, 0..599 (the official 1-based id minus 1);
             or instead "verb" (0-based index or name) and "object" (index or name): a pair that
             is not an HOI class is dropped and counted
  boxes      xyxy in continuous 0-based pixels of the scored image: a box covering the whole
             W x H image is [0, 0, W, H]; HICO-DET's 1-based inclusive [x1, y1, x2, y2] is
             [x1 - 1, y1 - 1, x2, y2] here (with --gt-size: pixels of the generated W x H image)
  score      a finite number; higher is more confident
A bad line is an error naming the file, the line and the field."""


class DetectionFormatError(ValueError):
    """A detection line that cannot be used; the message is ``file:line: field 'x': problem``."""

    def __init__(self, source: str, line: int, field_name: str, message: str):
        super().__init__(f"{source}:{line}: field {field_name!r}: {message}")
        self.source = source
        self.line = line
        self.field_name = field_name


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_index(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _LineParser:
    """Validates one decoded line; keeps the vocabulary lookups it needs."""

    def __init__(self, vocab: HOIVocabulary, source: str):
        self.vocab = vocab
        self.source = source
        self.table = vocab.hoi_table()

    def error(self, line: int, field_name: str, message: str) -> DetectionFormatError:
        return DetectionFormatError(self.source, line, field_name, message)

    def box(self, item: dict, name: str, line: int) -> list[float]:
        box = item[name]
        if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
            raise self.error(line, name, f"expected [x1, y1, x2, y2] (4 numbers), got {box!r}")
        if not all(math.isfinite(v) for v in box):
            raise self.error(line, name, f"non-finite value in {box!r}")
        if box[2] < box[0] or box[3] < box[1]:
            raise self.error(line, name, f"x2 < x1 or y2 < y1 in {box!r} (expected xyxy)")
        return box

    def _named_index(self, value, line: int, name: str, size: int, lookup) -> int:
        if _is_index(value):
            if not 0 <= value < size:
                raise self.error(line, name, f"index {value} outside 0..{size - 1}")
            return value
        if isinstance(value, str):
            try:
                return lookup(value)
            except KeyError:
                raise self.error(line, name, f"unknown {name} {value!r}") from None
        raise self.error(line, name, f"expected an index or a name, got {value!r}")

    def hoi(self, item: dict, line: int) -> int | None:
        """HOI id, or None for a verb-object pair outside the class list (dropped by the mask)."""
        hoi = None
        if "hoi" in item:
            hoi = item["hoi"]
            if not _is_index(hoi) or not 0 <= hoi < self.vocab.num_classes:
                raise self.error(line, "hoi", f"expected an integer in 0..{self.vocab.num_classes - 1}, got {hoi!r}")
        has_verb, has_object = "verb" in item, "object" in item
        if not has_verb and not has_object:
            if hoi is None:
                raise self.error(line, "hoi", 'is missing (give "hoi", or "verb" and "object")')
            return hoi
        if has_verb != has_object:
            missing = "object" if has_verb else "verb"
            raise self.error(line, missing, 'is missing ("verb" and "object" go together)')
        verb = self._named_index(item["verb"], line, "verb", self.vocab.num_verbs, self.vocab.verb_index)
        obj = self._named_index(item["object"], line, "object", self.vocab.num_objects, self.vocab.object_index)
        from_pair = int(self.table[verb, obj])
        if hoi is not None and from_pair != hoi:
            raise self.error(line, "hoi", f"{hoi} disagrees with verb {item['verb']!r} and object {item['object']!r}")
        return None if from_pair < 0 else from_pair

    def parse(self, item, line: int):
        if not isinstance(item, dict):
            raise self.error(line, "<line>", f"expected a JSON object, got {type(item).__name__}")
        for name in REQUIRED_FIELDS:
            if name not in item:
                raise self.error(line, name, "is missing")
        file_name = item["file_name"]
        if not isinstance(file_name, str) or not file_name.strip():
            raise self.error(line, "file_name", f"expected a non-empty string, got {file_name!r}")
        score = item["score"]
        if not _is_number(score) or not math.isfinite(score):
            raise self.error(line, "score", f"expected a finite number, got {score!r}")
        human = self.box(item, "human_box", line)
        obj = self.box(item, "object_box", line)
        return file_name, self.hoi(item, line), human, obj, float(score)


@dataclass
class DetectionTable:
    """The rows of a detection file, keyed by file name (not yet tied to a GT image list)."""

    file_names: list[str]
    lines: np.ndarray  # int64 [N] 1-based line numbers, for error messages
    hoi: np.ndarray
    human_boxes: np.ndarray
    object_boxes: np.ndarray
    scores: np.ndarray
    source: str = "<detections>"
    num_invalid_pairs: int = 0  # verb-object lines dropped by the validity mask
    unknown_images: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scores)

    def to_arrays(self, gt_file_names: Sequence[str], *, ignore_unknown: bool = False) -> DetectionArrays:
        """Rows as :class:`DetectionArrays` over the GT images.

        A name matches a GT image exactly, else by its base name, else by its stem when that is
        unique in the GT (a detector that ran on ``.png`` renders of ``.jpg`` images). Rows of images
        not in the GT are an error, or dropped and listed in ``unknown_images`` with ``ignore_unknown``.
        """
        index = _name_index(gt_file_names)
        image = np.empty(len(self), dtype=np.int64)
        unknown: dict[str, int] = {}
        for k, name in enumerate(self.file_names):
            found = _lookup(index, name)
            if found is None:
                unknown.setdefault(name, int(self.lines[k]))
                image[k] = -1
            else:
                image[k] = found
        if unknown and not ignore_unknown:
            first, line = next(iter(unknown.items()))
            raise DetectionFormatError(
                self.source,
                line,
                "file_name",
                f"{first!r} is not a GT image ({len(unknown)} unknown file names in all; "
                "check --gt, or pass --ignore-unknown-images)",
            )
        self.unknown_images = sorted(unknown)
        keep = image >= 0
        return DetectionArrays(
            image[keep], self.hoi[keep], self.human_boxes[keep], self.object_boxes[keep], self.scores[keep]
        )


def _name_index(file_names: Sequence[str]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    exact = {name: k for k, name in enumerate(file_names)}
    base: dict[str, int] = {}
    stem: dict[str, int] = {}
    stem_count: dict[str, int] = {}
    for k, name in enumerate(file_names):
        path = PurePath(name)
        base.setdefault(path.name, k)
        stem.setdefault(path.stem, k)
        stem_count[path.stem] = stem_count.get(path.stem, 0) + 1
    return exact, base, {s: k for s, k in stem.items() if stem_count[s] == 1}


def _lookup(index: tuple[dict[str, int], dict[str, int], dict[str, int]], name: str) -> int | None:
    exact, base, stem = index
    if name in exact:
        return exact[name]
    path = PurePath(name)
    if path.name in base:
        return base[path.name]
    return stem.get(path.stem)


def _fast_fields(item) -> tuple | None:
    """The five fields of a line in the common ``hoi`` form, types checked shallowly; else None."""
    if type(item) is not dict or "verb" in item or "object" in item:
        return None
    try:
        name, hoi, human, obj, score = (
            item["file_name"], item["hoi"], item["human_box"], item["object_box"], item["score"]
        )
    except KeyError:
        return None
    if (
        type(name) is not str
        or type(hoi) is not int
        or type(human) is not list
        or type(obj) is not list
        or len(human) != 4
        or len(obj) != 4
        or (type(score) is not float and type(score) is not int)
    ):
        return None
    return name, hoi, human, obj, score


def read_detections_jsonl(path: str | Path, vocab: HOIVocabulary) -> DetectionTable:
    """Read and validate a detection file; the first bad line raises :class:`DetectionFormatError`.

    Lines in the common form are gathered as they are and checked column-wise (fast at 10^6 lines);
    a line that fails a check is parsed again by the line validator, which names the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detection file not found: {path}")
    parser = _LineParser(vocab, str(path))
    rows: list[tuple] = []
    lines: list[int] = []
    dropped = 0
    loads = json.loads
    with path.open(encoding="utf-8") as fh:
        for line_no, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                item = loads(text)
            except json.JSONDecodeError as err:
                raise DetectionFormatError(str(path), line_no, "<json>", f"not valid JSON ({err.msg})") from None
            fields = _fast_fields(item)
            if fields is None:
                fields = parser.parse(item, line_no)
                if fields[1] is None:
                    dropped += 1
                    continue
            rows.append(fields)
            lines.append(line_no)

    def recheck(row: int) -> None:
        """Raise the precise error for a row that failed a column check."""
        line_no = lines[row]
        parser.parse(json.loads(_read_line(path, line_no)), line_no)
        raise AssertionError(f"{path}:{line_no}: failed a column check but passes the line validator")

    n = len(rows)
    names = [r[0] for r in rows]
    empty_name = [k for k, name in enumerate(names) if not name.strip()]
    if empty_name:
        recheck(empty_name[0])
    hoi = np.fromiter((r[1] for r in rows), dtype=np.int64, count=n)
    bad = np.flatnonzero((hoi < 0) | (hoi >= vocab.num_classes))
    if len(bad):
        recheck(int(bad[0]))
    boxes = {}
    for col, name in ((2, "human_box"), (3, "object_box")):
        values = [r[col] for r in rows]
        numeric = [all((type(v) is float or type(v) is int) for v in box) for box in values]
        if not all(numeric):
            recheck(numeric.index(False))
        array = np.asarray(values, dtype=np.float64).reshape(-1, 4)
        bad = np.flatnonzero(
            ~np.isfinite(array).all(axis=1) | (array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1])
        )
        if len(bad):
            recheck(int(bad[0]))
        boxes[name] = array
    scores = np.fromiter((r[4] for r in rows), dtype=np.float64, count=n)
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        recheck(int(bad[0]))
    return DetectionTable(
        file_names=names,
        lines=np.asarray(lines, dtype=np.int64),
        hoi=hoi,
        human_boxes=boxes["human_box"],
        object_boxes=boxes["object_box"],
        scores=scores,
        source=str(path),
        num_invalid_pairs=dropped,
    )


def _read_line(path: Path, line_no: int) -> str:
    with path.open(encoding="utf-8") as fh:
        for k, text in enumerate(fh, 1):
            if k == line_no:
                return text
    raise IndexError(f"{path} has no line {line_no}")


_LINE = (
    '{"file_name": %s, "hoi": %d, "human_box": [%r, %r, %r, %r], '
    '"object_box": [%r, %r, %r, %r], "score": %r}\n'
)


def _line(quoted_name: str, hoi: int, values: Sequence[float]) -> str:
    """``values``: 4 + 4 box coordinates and the score, as Python floats (``repr`` round-trips)."""
    if not all(map(math.isfinite, values)):
        raise ValueError(f"cannot write non-finite values to a detection file: {quoted_name} {list(values)}")
    return _LINE % (quoted_name, hoi, *values)


def detection_line(file_name: str, det: HOIDetection) -> str:
    """One JSONL line, newline included."""
    values = [float(v) for v in (*det.human_box, *det.object_box, det.score)]
    return _line(json.dumps(file_name), int(det.hoi), values)


class DetectionsWriter:
    """Append detections image by image (the eval command writes as it goes and can resume).

    ``with DetectionsWriter(path) as w: w.write(file_name, detections)``; each call is flushed, so a
    crash leaves only whole lines. ``append=False`` starts a new file.
    """

    def __init__(self, path: str | Path, append: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a" if append else "w", encoding="utf-8")
        self.count = 0

    def write(self, file_name: str, detections: ImageDetections | Iterable[HOIDetection]) -> int:
        if isinstance(detections, ImageDetections):  # columns: no object per line
            quoted = json.dumps(file_name)
            values = np.concatenate([detections.human_boxes, detections.object_boxes, detections.scores[:, None]],
                                    axis=1).tolist()
            text = "".join(_line(quoted, h, v) for h, v in zip(detections.hoi.tolist(), values))
        else:
            text = "".join(detection_line(file_name, det) for det in detections)
        self._fh.write(text)
        self._fh.flush()
        written = text.count("\n")
        self.count += written
        return written

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> DetectionsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_detections_jsonl(
    path: str | Path,
    detections: Mapping[str, Sequence[HOIDetection]] | Iterable[tuple[str, ImageDetections | Sequence[HOIDetection]]],
) -> int:
    """Write a whole detection file atomically (through a temporary file); returns the line count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = detections.items() if isinstance(detections, Mapping) else detections
    counts = []

    def write(tmp: Path) -> None:
        with DetectionsWriter(tmp, append=False) as writer:
            for file_name, dets in items:
                writer.write(file_name, dets)
            counts.append(writer.count)

    write_file_atomic(path, write)
    return counts[0]


def write_detection_arrays(path: str | Path, det: DetectionArrays, file_names: Sequence[str]) -> int:
    """Write :class:`DetectionArrays` (``image`` indexing ``file_names``) atomically, in row order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    quoted = [json.dumps(name) for name in file_names]
    values = np.concatenate([det.human_boxes, det.object_boxes, det.scores[:, None]], axis=1).tolist()
    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.writelines(_line(quoted[i], h, v) for i, h, v in zip(det.image.tolist(), det.hoi.tolist(), values))

    write_file_atomic(path, write)
    return len(det)
