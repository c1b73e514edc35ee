"""Image masks of the Known Object setting: per object, the images where it is "known" to occur.

A mask is boolean ``[num_objects, num_images]`` (images in GT-record order); a class is evaluated on the
images of its object's row only (its detections and GT pairs elsewhere are dropped).

* official with ``anno.mat``: images with a positive image-level label (``anno_test == 1``; 0 ambiguous,
  -1 negative and NaN are not) for *any* HOI of the same object (ho-rcnn ``eval_one.m``);
* otherwise (and for ``fgahoi``): images whose GT has a pair with that object in the object role;
* a GGNet ``file_name_to_obj_cat.json`` (file name → COCO-91 ids) reproduces that file exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...vocab import HOIVocabulary
from .arrays import GroundTruthArrays


def known_object_from_gt(gt: GroundTruthArrays, num_objects: int) -> np.ndarray:
    mask = np.zeros((num_objects, gt.num_images), dtype=bool)
    mask[gt.object, gt.image] = True
    return mask


def known_object_from_labels(labels: np.ndarray, vocab: HOIVocabulary) -> np.ndarray:
    """From image-level labels ``[num_classes, num_images]`` (1 positive, 0, -1, NaN)."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.shape[0] != vocab.num_classes:
        raise ValueError(f"image-level labels have {labels.shape[0]} rows, the vocabulary {vocab.num_classes} classes")
    positive = labels == 1
    mask = np.zeros((vocab.num_objects, labels.shape[1]), dtype=bool)
    for h, c in enumerate(vocab.classes):
        mask[c.object] |= positive[h]
    return mask


def _mat_strings(value) -> list[str]:
    """A MATLAB cell array of strings as ``loadmat(simplify_cells=True)`` returns it (str or array)."""
    return [str(v) for v in np.atleast_1d(np.asarray(value, dtype=object)).reshape(-1)]


def known_object_from_anno_mat(path: str | Path, file_names: Sequence[str], vocab: HOIVocabulary) -> np.ndarray:
    """Read ``anno_test`` (and ``list_test`` to align its columns with ``file_names``) from ``anno.mat``."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"anno.mat not found: {path} (HICO-DET's anno.mat holds anno_test)")
    data = loadmat(str(path), simplify_cells=True)
    if "anno_test" not in data:
        raise KeyError(f"{path}: no 'anno_test' variable (found {sorted(k for k in data if not k.startswith('__'))})")
    labels = np.asarray(data["anno_test"], dtype=np.float64)
    if labels.ndim != 2:
        raise ValueError(f"{path}: anno_test must be 2-D [classes, images], got shape {labels.shape}")
    if "list_test" in data:
        names = _mat_strings(data["list_test"])
        if len(names) != labels.shape[1]:
            raise ValueError(f"{path}: list_test has {len(names)} names for {labels.shape[1]} anno_test columns")
        column = {name: k for k, name in enumerate(names)}
        missing = [f for f in file_names if f not in column]
        if missing:
            raise KeyError(f"{path}: {len(missing)} GT images are not in list_test, e.g. {missing[:3]}")
        labels = labels[:, [column[f] for f in file_names]]
    elif labels.shape[1] != len(file_names):
        raise ValueError(
            f"{path}: anno_test has {labels.shape[1]} columns for {len(file_names)} GT images and no list_test to align them"
        )
    return known_object_from_labels(labels, vocab)


def known_object_from_obj_cat_json(path: str | Path, file_names: Sequence[str], vocab: HOIVocabulary) -> np.ndarray:
    """GGNet's ``file_name_to_obj_cat.json`` (file name → list of COCO-91 category ids)."""
    table = json.loads(Path(path).read_text())
    mask = np.zeros((vocab.num_objects, len(file_names)), dtype=bool)
    for k, name in enumerate(file_names):
        for coco_id in table.get(name, ()):
            try:
                mask[vocab.coco91_to_object(int(coco_id)), k] = True
            except KeyError:
                continue
    return mask
