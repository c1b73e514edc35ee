"""PPDM/QPIC ``trainval_hico.json`` / ``test_hico.json``.

A list of images: ``file_name``, ``annotations`` (``bbox`` raw 1-based xyxy, ``category_id`` COCO-91)
and ``hoi_annotation`` (``subject_id``/``object_id`` index ``annotations``, ``category_id`` is the verb,
1..117 alphabetical; ``hoi_category_id`` 1..600 only in the training file). The file has neither verb
names nor image sizes: the vocabulary comes from an accompanying file, sizes from that file, from
``width``/``height`` keys when present, or from the image headers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...vocab import HOIVocabulary
from ..records import ImageRecord
from .common import AnnotationError, RecordBuilder, as_int

PERSON_COCO91 = 1


def is_qpic(data) -> bool:
    if not isinstance(data, list):
        return False
    return all(isinstance(item, dict) and "file_name" in item and "hoi_annotation" in item for item in data[:5])


def read_qpic_json(
    path: str | Path,
    data: list,
    vocab: HOIVocabulary,
    image_size: Callable[[str], tuple[int, int] | None],
) -> tuple[list[ImageRecord], Counter, np.ndarray]:
    source = str(path)
    builder = RecordBuilder(source, vocab)
    object_of_coco91 = {}
    for k in range(vocab.num_objects):
        try:
            object_of_coco91[vocab.object_to_coco91(k)] = k
        except (KeyError, ValueError):
            pass  # an object that is no COCO category cannot appear in this layout
    for index, item in enumerate(data):
        file_name = item.get("file_name")
        where_image = builder.where(index, file_name)
        if "width" in item and "height" in item:
            size = (item["width"], item["height"])
        elif "orig_size" in item:
            size = (item["orig_size"][1], item["orig_size"][0])  # DETR-style (h, w)
        else:
            size = image_size(file_name) if isinstance(file_name, str) else None
        if size is None:
            raise AnnotationError(
                f"{where_image}: no image size. The PPDM/QPIC files carry none: pass vocabulary= (anno_bbox.mat or "
                "instances json, which have sizes) or image_dir= (sizes are read from the image headers)"
            )
        builder.image(index, file_name, size[0], size[1])
        boxes = item.get("annotations", [])
        for k, hoi_entry in enumerate(item.get("hoi_annotation", [])):
            where = f"{where_image}, hoi_annotation[{k}]"
            subject = as_int(hoi_entry.get("subject_id"), "subject_id", where)
            obj = as_int(hoi_entry.get("object_id"), "object_id", where)
            if not (0 <= subject < len(boxes) and 0 <= obj < len(boxes)):
                raise AnnotationError(f"{where}: subject_id {subject} / object_id {obj} outside annotations[0..{len(boxes) - 1}]")
            if as_int(boxes[subject].get("category_id"), "category_id", where) != PERSON_COCO91:
                raise AnnotationError(f"{where}: the subject box annotations[{subject}] is not a person (COCO id 1)")
            verb = as_int(hoi_entry.get("category_id"), "verb category_id", where) - 1
            if not 0 <= verb < vocab.num_verbs:
                raise AnnotationError(f"{where}: verb category_id {verb + 1} is outside 1..{vocab.num_verbs}")
            coco_id = as_int(boxes[obj].get("category_id"), "object category_id", where)
            object_index = object_of_coco91.get(coco_id)
            if object_index is None:
                raise AnnotationError(f"{where}: object category_id {coco_id} is not a COCO id of the vocabulary's objects")
            if not vocab.has_pair(verb, object_index):
                raise AnnotationError(
                    f"{where}: verb {vocab.verbs[verb]!r} with object {vocab.objects[object_index]!r} is not one of "
                    "the vocabulary's HOI classes"
                )
            hoi = vocab.hoi_id(verb, object_index)
            if "hoi_category_id" in hoi_entry:
                listed = as_int(hoi_entry["hoi_category_id"], "hoi_category_id", where) - 1
                builder.check_hoi(listed, where)
                if listed != hoi:
                    raise AnnotationError(
                        f"{where}: hoi_category_id {listed + 1} disagrees with verb {verb + 1} + object (HOI id {hoi + 1})"
                    )
            builder.add_pair(boxes[subject].get("bbox", ()), boxes[obj].get("bbox", ()), hoi, label=f"hoi_annotation[{k}]")
    return builder.finish(), builder.skipped, builder.listed_counts
