"""The official ``anno_bbox.mat``: both splits and the HOI class list in one MATLAB file.

Read as ``scipy.io.loadmat(simplify_cells=True)`` returns it (by ``matfile.read_mat``, a faster reader of
the same result, with scipy as fallback), which turns MATLAB struct arrays into lists of
dicts with two quirks every access here goes through ``_items`` for: a struct array with **one**
element comes back as a bare dict (an image with one HOI, an HOI with one human box) and an **empty**
one as an empty numeric array (the boxes and connection of an ``invis`` HOI). ``connection`` with one
row comes back squeezed to shape (2,).
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from ...vocab import HOIVocabulary
from ..records import ImageRecord
from .common import AnnotationError, RecordBuilder, UnknownFormatError, as_int, with_counts
from .matfile import UnsupportedMat, read_mat

log = logging.getLogger(__name__)

SPLIT_KEYS = {"train": "bbox_train", "test": "bbox_test"}


def _items(value) -> list:
    """A MATLAB struct/cell array as a list, whatever ``simplify_cells`` made of it."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return []
        if value.dtype == object:
            return list(value.reshape(-1))
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.size == 0:
        return ""
    if isinstance(value, np.ndarray) and value.dtype.kind in "US":
        return "".join(str(v) for v in value.reshape(-1))
    return str(value)


def _boxes(entries, where: str, field: str) -> list[tuple[float, float, float, float]]:
    """``bboxhuman``/``bboxobject`` of one HOI as (x1, y1, x2, y2) tuples, still 1-based."""
    try:
        return [(float(e["x1"]), float(e["y1"]), float(e["x2"]), float(e["y2"])) for e in _items(entries)]
    except (KeyError, TypeError, ValueError):
        for j, entry in enumerate(_items(entries)):
            if not isinstance(entry, dict) or not {"x1", "x2", "y1", "y2"} <= set(entry):
                raise AnnotationError(f"{where}, {field}({j + 1}): a box must be a struct with x1, x2, y1, y2, "
                                      f"got {entry!r}") from None
        raise AnnotationError(f"{where}, {field}: box values must be numbers") from None


def vocabulary_from_action_list(actions, source: str) -> HOIVocabulary:
    entries = []
    for k, action in enumerate(_items(actions)):
        if not isinstance(action, dict) or not {"nname", "vname"} <= set(action):
            raise AnnotationError(f"{source}: list_action({k + 1}) needs fields nname and vname")
        nname, vname = _text(action["nname"]).strip(), _text(action["vname"]).strip()
        ing = _text(action.get("vname_ing", "")).strip() or vname
        if not nname or not vname:
            raise AnnotationError(f"{source}: list_action({k + 1}) has an empty object or verb name")
        entries.append((nname, vname, ing))
    if not entries:
        raise AnnotationError(f"{source}: list_action is empty")
    try:
        return HOIVocabulary.from_action_list(entries)
    except ValueError as err:
        raise AnnotationError(f"{source}: list_action: {err}") from None


def _parse_split(images, builder: RecordBuilder, key: str) -> list[ImageRecord]:
    for index, image in enumerate(_items(images)):
        if not isinstance(image, dict):
            raise AnnotationError(f"{builder.where(index)}: {key} entries must be structs, got {type(image).__name__}")
        size = image.get("size")
        if not isinstance(size, dict):
            raise AnnotationError(f"{builder.where(index, _text(image.get('filename', '')))}: missing size")
        record = builder.image(index, _text(image.get("filename", "")), size.get("width"), size.get("height"))
        where_image = builder.where(index, record.file_name)
        for k, hoi_entry in enumerate(_items(image.get("hoi", []))):
            where = f"{where_image}, hoi({k + 1})"
            if not isinstance(hoi_entry, dict):
                raise AnnotationError(f"{where}: must be a struct")
            hoi = builder.check_hoi(as_int(hoi_entry.get("id"), "HOI id", where) - 1, where)
            if as_int(hoi_entry.get("invis", 0), "invis", where):
                builder.skipped["invisible_hoi"] += 1
                continue
            humans = _boxes(hoi_entry.get("bboxhuman"), where, "bboxhuman")
            objects = _boxes(hoi_entry.get("bboxobject"), where, "bboxobject")
            connection = np.asarray(hoi_entry.get("connection", []), dtype=np.float64)
            if connection.size % 2:
                raise AnnotationError(f"{where}: connection must have 2 columns, got shape {connection.shape}")
            for row, (h, o) in enumerate(connection.reshape(-1, 2).tolist()):
                if not (h.is_integer() and o.is_integer() and 1 <= h <= len(humans) and 1 <= o <= len(objects)):
                    raise AnnotationError(
                        f"{where}: connection row {row + 1} [{h:g}, {o:g}] points outside the "
                        f"{len(humans)} human / {len(objects)} object boxes"
                    )
                builder.add_pair(humans[int(h) - 1], objects[int(o) - 1], hoi, label=f"hoi({k + 1}), connection row {row + 1}")
    return builder.finish()


def load_simplified(path: Path, reader: str = "auto") -> dict:
    """The file as ``scipy.io.loadmat(simplify_cells=True)`` returns it.

    ``reader="auto"`` uses the fast reader of ``matfile`` and falls back to scipy for anything it does
    not cover; ``"scipy"`` / ``"fast"`` force one of them.
    """
    if reader in ("auto", "fast"):
        try:
            return read_mat(path)
        except (UnsupportedMat, struct.error, zlib.error, UnicodeDecodeError, IndexError, ValueError) as err:
            if reader == "fast":
                raise
            log.info("%s: fast MAT reader declined (%s); reading with scipy", path, err)
    from scipy.io import loadmat

    try:
        return loadmat(path, simplify_cells=True)
    except Exception as err:  # scipy raises several types for non-MAT input
        raise UnknownFormatError(path, f"scipy cannot read it as a MATLAB file: {err}") from None


def read_anno_bbox_mat(
    path: str | Path, reader: str = "auto"
) -> tuple[HOIVocabulary, dict[str, tuple[list[ImageRecord], Counter]]]:
    """Parse both splits; the vocabulary's training counts are the visible training pairs as listed."""
    path = Path(path)
    content = load_simplified(path, reader)
    if "list_action" not in content or not any(k in content for k in SPLIT_KEYS.values()):
        found = sorted(k for k in content if not k.startswith("__"))
        raise UnknownFormatError(path, f"a MATLAB file without list_action/bbox_train/bbox_test (has {found})")
    vocab = vocabulary_from_action_list(content["list_action"], str(path))
    splits, counts = {}, None
    for split, key in SPLIT_KEYS.items():
        builder = RecordBuilder(path, vocab)
        builder.source = f"{path} [{key}]"
        records = _parse_split(content.get(key, []), builder, key)
        splits[split] = (records, builder.skipped)
        if split == "train":
            counts = builder.listed_counts
    vocab = with_counts(vocab, counts)
    return vocab, splits
