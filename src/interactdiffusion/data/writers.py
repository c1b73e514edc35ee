"""Write records in the three HICO-DET annotation layouts researchers have on disk.

Used by the synthetic data set (tests, demo, benchmarks) and by anyone who wants to hand our records to
tools that read the original files. Each writer produces the real layout, quirks included:

- ``anno_bbox.mat`` (official): 1×N struct arrays ``bbox_train`` / ``bbox_test`` with ``filename``,
  ``size.{width,height,depth}`` and ``hoi`` (``id`` 1..600, ``bboxhuman``/``bboxobject`` with fields
  ``x1,x2,y1,y2`` in 1-based inclusive pixels, ``connection`` M×2 1-based [human, object] rows,
  ``invis``), plus ``list_action`` (600×1: ``nname``, ``vname``, ``vname_ing``, ...). A single box is a
  1×1 struct and an invisible HOI has empty arrays, exactly the cases ``loadmat(simplify_cells=True)``
  turns into a dict and an empty array.
- PPDM/QPIC ``trainval_hico.json`` / ``test_hico.json``: per image ``file_name``, ``annotations``
  (``bbox`` raw 1-based xyxy, ``category_id`` COCO-91), ``hoi_annotation`` (``subject_id``,
  ``object_id``, ``category_id`` = verb 1..117 in alphabetical order, and ``hoi_category_id`` 1..600 in
  the training file only). No image size: the real files have none.
- fredzzhang/hicodet ``instances_{train,test}2015.json``: ``annotation`` per image (``boxes_h``,
  ``boxes_o``, ``hoi`` 0..599, ``verb`` 0..116, ``object``), ``filenames``, ``size`` [w, h], ``empty``,
  ``objects``, ``verbs``, ``correspondence`` [hoi, object, verb], ``rare``, ``non_rare``.

Records hold continuous 0-based boxes (see ``boxes.py``); every writer converts back to 1-based.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..atomic import write_file_atomic, write_text_atomic
from ..vocab import RARE_THRESHOLD, HOIVocabulary
from .boxes import continuous_to_one_based, plain_number
from .records import ImageRecord, PairRecord

MAT_IMAGE_FIELDS = ("filename", "size", "hoi")
MAT_SIZE_FIELDS = ("width", "height", "depth")
MAT_HOI_FIELDS = ("id", "bboxhuman", "bboxobject", "connection", "invis")
MAT_BOX_FIELDS = ("x1", "x2", "y1", "y2")
MAT_ACTION_FIELDS = ("nname", "vname", "vname_ing", "syn", "def", "synset", "add_def")


def _savemat_atomic(path: str | Path, content: Mapping, **options) -> Path:
    """``scipy.io.savemat`` (uncompressed) through a file object, published atomically."""
    from scipy.io import savemat

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            savemat(fh, content, do_compression=False, **options)

    return write_file_atomic(path, write)


def _write_json(path: str | Path, data) -> Path:
    return write_text_atomic(path, json.dumps(data))


def group_pairs_by_hoi(record: ImageRecord) -> list[tuple[int, list[PairRecord]]]:
    """The record's pairs grouped by HOI class, groups in order of first appearance.

    ``anno_bbox.mat`` can only store pairs grouped this way; the json writers use the same order so
    that all three files parse back to the same pair order.
    """
    groups: dict[int, list[PairRecord]] = {}
    for pair in record.pairs:
        groups.setdefault(pair.hoi, []).append(pair)
    return list(groups.items())


def _unique_index(items: list, value) -> int:
    """Index of ``value`` in ``items`` (appending it when new): shared boxes are stored once."""
    try:
        return items.index(value)
    except ValueError:
        items.append(value)
        return len(items) - 1


# -- anno_bbox.mat --------------------------------------------------------------------------------
def _struct_array(rows: Sequence[Mapping[str, object]], fields: Sequence[str], shape: tuple[int, int]) -> np.ndarray:
    """A MATLAB struct array (numpy structured array of objects) of the given 2-D shape."""
    array = np.empty(shape, dtype=[(name, object) for name in fields])
    flat = array.reshape(-1)
    for i, row in enumerate(rows):
        for name in fields:
            flat[name][i] = row[name]
    return array


def _empty() -> np.ndarray:
    return np.zeros((0, 0))


def _mat_boxes(boxes: list[tuple[float, ...]]) -> np.ndarray:
    rows = []
    for box in boxes:
        x1, y1, x2, y2 = continuous_to_one_based(box)
        rows.append({"x1": x1, "x2": x2, "y1": y1, "y2": y2})
    return _struct_array(rows, MAT_BOX_FIELDS, (1, len(rows)))


def _mat_image(record: ImageRecord, invisible: Sequence[int]) -> dict[str, object]:
    hois = []
    for hoi, pairs in group_pairs_by_hoi(record):
        humans: list[tuple[float, ...]] = []
        objects: list[tuple[float, ...]] = []
        connection = [
            (_unique_index(humans, p.human_box) + 1, _unique_index(objects, p.object_box) + 1) for p in pairs
        ]
        hois.append(
            {
                "id": float(hoi + 1),
                "bboxhuman": _mat_boxes(humans),
                "bboxobject": _mat_boxes(objects),
                "connection": np.asarray(connection, dtype=np.float64).reshape(-1, 2),
                "invis": 0.0,
            }
        )
    for hoi in invisible:
        hois.append({"id": float(hoi + 1), "bboxhuman": _empty(), "bboxobject": _empty(),
                     "connection": _empty(), "invis": 1.0})
    size = _struct_array([{"width": float(record.width), "height": float(record.height), "depth": 3.0}],
                         MAT_SIZE_FIELDS, (1, 1))
    hoi_array = _struct_array(hois, MAT_HOI_FIELDS, (1, len(hois))) if hois else _empty()
    return {"filename": record.file_name, "size": size, "hoi": hoi_array}


def write_anno_bbox_mat(
    path: str | Path,
    train_records: Sequence[ImageRecord],
    test_records: Sequence[ImageRecord],
    vocab: HOIVocabulary,
    invisible: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Write the official ``anno_bbox.mat`` (MATLAB v5) for both splits and the action list.

    ``invisible`` maps a file name to 0-based HOI ids to add as ``invis = 1`` entries (no boxes, no
    connection), as the official file has for labels whose boxes were not annotated.
    """

    invisible = invisible or {}
    actions = [
        {
            "nname": vocab.objects[c.object],
            "vname": vocab.verbs[c.verb],
            "vname_ing": vocab.verb_ing[c.verb],
            "syn": _empty(),
            "def": "",
            "synset": "",
            "add_def": "",
        }
        for c in vocab.classes
    ]
    content = {
        "bbox_train": _struct_array(
            [_mat_image(r, invisible.get(r.file_name, ())) for r in train_records],
            MAT_IMAGE_FIELDS,
            (1, len(train_records)),
        ),
        "bbox_test": _struct_array(
            [_mat_image(r, invisible.get(r.file_name, ())) for r in test_records],
            MAT_IMAGE_FIELDS,
            (1, len(test_records)),
        ),
        "list_action": _struct_array(actions, MAT_ACTION_FIELDS, (len(actions), 1)),
    }
    return _savemat_atomic(path, content, oned_as="row")


def write_anno_mat(
    path: str | Path,
    test_records: Sequence[ImageRecord],
    vocab: HOIVocabulary,
    invisible: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Write HICO-DET's ``anno.mat`` image-level labels: ``anno_test`` [classes, images] (1 for every class
    annotated in the image, visible or not; -1 otherwise) and ``list_test`` (the file names)."""
    import numpy as np

    invisible = invisible or {}
    labels = -np.ones((vocab.num_classes, len(test_records)))
    for k, record in enumerate(test_records):
        for hoi in [p.hoi for p in record.pairs] + list(invisible.get(record.file_name, ())):
            labels[hoi, k] = 1.0
    names = np.empty((len(test_records), 1), dtype=object)
    names[:, 0] = [r.file_name for r in test_records]
    return _savemat_atomic(path, {"anno_test": labels, "list_test": names})


# -- PPDM / QPIC json -------------------------------------------------------------------------------
def _json_box(box: Sequence[float]) -> list[int | float]:
    return [plain_number(v) for v in continuous_to_one_based(box)]


def write_qpic_json(
    path: str | Path,
    records: Sequence[ImageRecord],
    vocab: HOIVocabulary,
    with_hoi_ids: bool | None = None,
) -> Path:
    """Write ``trainval_hico.json`` / ``test_hico.json`` (PPDM/QPIC layout).

    ``with_hoi_ids`` adds ``img_id`` and ``hoi_category_id`` as the training file has; by default it is
    on unless the file name contains "test" (the real ``test_hico.json`` carries verb ids only).
    """
    path = Path(path)
    if with_hoi_ids is None:
        with_hoi_ids = "test" not in path.name
    person = vocab.object_to_coco91(vocab.person_index)
    images = []
    for k, record in enumerate(records):
        boxes: list[tuple[tuple[float, ...], int]] = []
        hois = []
        for _, pairs in group_pairs_by_hoi(record):
            for p in pairs:
                entry = {
                    "subject_id": _unique_index(boxes, (tuple(p.human_box), person)),
                    "object_id": _unique_index(boxes, (tuple(p.object_box), vocab.object_to_coco91(p.object))),
                    "category_id": p.verb + 1,
                }
                if with_hoi_ids:
                    entry["hoi_category_id"] = p.hoi + 1
                hois.append(entry)
        image: dict[str, object] = {"file_name": record.file_name}
        if with_hoi_ids:
            digits = "".join(ch for ch in Path(record.file_name).stem[-8:] if ch.isdigit())
            image["img_id"] = int(digits) if digits else k + 1
        image["annotations"] = [{"bbox": _json_box(b), "category_id": c} for b, c in boxes]
        image["hoi_annotation"] = hois
        images.append(image)
    return _write_json(path, images)


def write_corre_hico(path: str | Path, vocab: HOIVocabulary) -> Path:
    """``corre_hico.npy``: the [verb, COCO-80 object] validity mask QPIC-style code loads."""
    table = np.zeros((vocab.num_verbs, 80), dtype=np.float64)
    for c in vocab.classes:
        table[c.verb, vocab.object_to_coco80(c.object)] = 1.0
    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.save(fh, table)

    return write_file_atomic(path, write)


# -- fredzzhang/hicodet json ----------------------------------------------------------------------
def write_instances_json(
    path: str | Path,
    records: Sequence[ImageRecord],
    vocab: HOIVocabulary,
    object_order: str = "alphabetical",
    train_counts: Sequence[int] | None = None,
) -> Path:
    """Write ``instances_{train,test}2015.json`` (fredzzhang/hicodet layout).

    ``object_order="alphabetical"`` is the main branch (our internal order); ``"coco80"`` writes the
    ``class`` branch, whose ``objects`` list and indices follow COCO-80 order. ``rare``/``non_rare`` come
    from ``train_counts``, else the vocabulary's, else the counts of ``records`` themselves.
    """
    if object_order == "alphabetical":
        object_names = list(vocab.objects)
        to_index = list(range(vocab.num_objects))
    elif object_order == "coco80":
        order = sorted(range(vocab.num_objects), key=vocab.object_to_coco80)
        object_names = [vocab.objects[o] for o in order]
        to_index = [order.index(o) for o in range(vocab.num_objects)]
    else:
        raise ValueError(f"object_order must be 'alphabetical' or 'coco80', got {object_order!r}")
    if train_counts is None:
        train_counts = vocab.train_counts
    if train_counts is None:
        counts = np.zeros(vocab.num_classes, dtype=np.int64)
        for r in records:
            for p in r.pairs:
                counts[p.hoi] += 1
        train_counts = counts
    rare = np.asarray(train_counts) < RARE_THRESHOLD

    annotation, empty = [], []
    for k, record in enumerate(records):
        entry: dict[str, list] = {"boxes_h": [], "boxes_o": [], "hoi": [], "object": [], "verb": []}
        for _, pairs in group_pairs_by_hoi(record):
            for p in pairs:
                entry["boxes_h"].append([float(v) for v in continuous_to_one_based(p.human_box)])
                entry["boxes_o"].append([float(v) for v in continuous_to_one_based(p.object_box)])
                entry["hoi"].append(p.hoi)
                entry["object"].append(to_index[p.object])
                entry["verb"].append(p.verb)
        if not record.pairs:
            empty.append(k)
        annotation.append(entry)
    data = {
        "annotation": annotation,
        "filenames": [r.file_name for r in records],
        "empty": empty,
        "objects": object_names,
        "verbs": list(vocab.verbs),
        "correspondence": [[h, to_index[c.object], c.verb] for h, c in enumerate(vocab.classes)],
        "size": [[r.width, r.height] for r in records],
        "rare": [h for h in range(vocab.num_classes) if rare[h]],
        "non_rare": [h for h in range(vocab.num_classes) if not rare[h]],
    }
    return _write_json(path, data)
