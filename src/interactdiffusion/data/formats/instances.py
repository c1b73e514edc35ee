"""fredzzhang/hicodet ``instances_{train,test}2015.json``.

One entry per image in ``annotation`` (``boxes_h``, ``boxes_o`` as raw 1-based xyxy, ``hoi`` 0..599,
``verb``, ``object``), parallel lists ``filenames`` and ``size`` ([w, h]), and the class tables
``objects``, ``verbs``, ``correspondence`` ([hoi, object, verb]), ``rare``, ``non_rare``. Object indices
refer to the file's own ``objects`` list, alphabetical on the main branch and COCO-80 on the ``class``
branch, so they are mapped by name. The file has no "-ing" forms: they are derived by rule unless a
vocabulary with the official ones is given.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ...vocab import RARE_THRESHOLD, HOIVocabulary, verb_ing
from ..records import ImageRecord
from .common import AnnotationError, RecordBuilder, as_int

REQUIRED_KEYS = ("annotation", "filenames", "size", "objects", "verbs", "correspondence")


def is_instances(data) -> bool:
    return isinstance(data, dict) and "annotation" in data and "filenames" in data


def class_names(data, source: str) -> list[tuple[str, str]]:
    """(object name, verb name) per HOI id, from ``correspondence``."""
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise AnnotationError(f"{source}: instances json without {missing}")
    objects, verbs = list(data["objects"]), list(data["verbs"])
    table: dict[int, tuple[str, str]] = {}
    for row in data["correspondence"]:
        where = f"{source}: correspondence row {row!r}"
        if not isinstance(row, (list, tuple)) or len(row) != 3:
            raise AnnotationError(f"{where}: expected [hoi, object, verb]")
        hoi, obj, verb = (as_int(v, "index", where) for v in row)
        if not (0 <= obj < len(objects) and 0 <= verb < len(verbs)):
            raise AnnotationError(f"{where}: object or verb index outside the objects/verbs lists")
        if hoi in table:
            raise AnnotationError(f"{where}: HOI id {hoi} listed twice")
        table[hoi] = (str(objects[obj]), str(verbs[verb]))
    if sorted(table) != list(range(len(table))):
        raise AnnotationError(f"{source}: correspondence must list HOI ids 0..{len(table) - 1} once each")
    return [table[h] for h in range(len(table))]


def vocabulary_from_instances(data, source: str, official: HOIVocabulary | None = None) -> HOIVocabulary:
    """The file's classes; with ``official`` (e.g. from anno_bbox.mat) its "-ing" forms are used."""
    names = class_names(data, source)
    if official is not None:
        official_names = [(official.objects[c.object], official.verbs[c.verb]) for c in official.classes]
        if official_names != names:
            first = next(k for k, (a, b) in enumerate(zip(official_names + [None] * len(names), names)) if a != b)
            raise AnnotationError(
                f"{source}: its HOI classes differ from the given vocabulary (first at HOI id {first}: "
                f"{names[first]} vs {official_names[first] if first < len(official_names) else 'none'})"
            )
        return official
    try:
        return HOIVocabulary.from_action_list([(o, v, verb_ing(v)) for o, v in names])
    except ValueError as err:
        raise AnnotationError(f"{source}: {err}") from None


def rare_counts(data, num_classes: int) -> np.ndarray | None:
    """Stand-in training counts from the file's ``rare``/``non_rare`` lists (0 = rare, 10 = not).

    Only used when no training annotations are at hand to count; it reproduces the split, not the counts.
    """
    if "rare" not in data:
        return None
    counts = np.full(num_classes, RARE_THRESHOLD, dtype=np.int64)
    counts[[int(h) for h in data["rare"]]] = 0
    return counts


def read_instances_json(path: str | Path, data, vocab: HOIVocabulary) -> tuple[list[ImageRecord], Counter, np.ndarray]:
    source = str(path)
    objects, verbs = list(data["objects"]), list(data["verbs"])
    annotation, filenames, sizes = data["annotation"], data["filenames"], data["size"]
    if not (len(annotation) == len(filenames) == len(sizes)):
        raise AnnotationError(
            f"{source}: annotation ({len(annotation)}), filenames ({len(filenames)}) and size ({len(sizes)}) "
            "must have the same length"
        )
    builder = RecordBuilder(source, vocab)
    # the file's verb/object indices → our vocabulary's, by name (the file may use COCO-80 object order)
    verb_of = {k: vocab.verbs.index(v) for k, v in enumerate(verbs) if v in vocab.verbs}
    object_of = {k: vocab.objects.index(o) for k, o in enumerate(objects) if o in vocab.objects}
    for index, (entry, file_name, size) in enumerate(zip(annotation, filenames, sizes)):
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise AnnotationError(f"{builder.where(index, file_name)}: size must be [width, height], got {size!r}")
        record = builder.image(index, file_name, size[0], size[1])
        fields = [entry.get(k, []) for k in ("boxes_h", "boxes_o", "hoi", "verb", "object")]
        if len({len(f) for f in fields}) != 1:
            raise AnnotationError(
                f"{builder.where(index, record.file_name)}: boxes_h, boxes_o, hoi, verb and object must have equal lengths"
            )
        for k, (human, obj, hoi, verb, object_index) in enumerate(zip(*fields)):
            if verb not in verb_of or object_index not in object_of:
                raise AnnotationError(
                    f"{builder.where(index, record.file_name)}, pair {k}: verb {verb!r} or object {object_index!r} is "
                    f"outside the file's verbs/objects lists ({len(verbs)} / {len(objects)})"
                )
            builder.add_pair(human, obj, hoi, expected=(verb_of[verb], object_of[object_index]))
    return builder.finish(), builder.skipped, builder.listed_counts
