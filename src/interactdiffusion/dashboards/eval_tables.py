"""An evaluation's per-class AP as a ``wandb.Table`` and a row's sample gallery with GT and detections.

The per-class table has one row per HOI class (600 for HICO-DET): ``hoi`` (official 0-based id),
``class`` ("verb object"), ``verb``, ``object``, ``rare``, ``num_gt``, then ``ap_<protocol>`` and
``ap_known_object_<protocol>`` for every protocol evaluated (percent; empty where a class cannot be
scored). It is built from the evaluator's ``per_class`` entries (``HOIEvaluator.evaluate``), so the
row command (from ``map_<protocol>.json``) and the training callback (in memory) log the same table.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .media import boxed_image, detection_box_data, scene_box_data, scene_caption

PER_CLASS_KEY = "per_class_ap"
GALLERY_KEY = "gallery"


def per_class_columns(protocols: list[str]) -> list[str]:
    columns = ["hoi", "class", "verb", "object", "rare", "num_gt"]
    return columns + [f"ap_{p}" for p in protocols] + [f"ap_known_object_{p}" for p in protocols]


def per_class_rows(evaluations: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the per-class table from ``{protocol: evaluator output}``."""
    protocols = list(evaluations)
    if not protocols:
        raise ValueError("per-class AP table: no protocol was evaluated")
    tables = [evaluations[p]["per_class"] for p in protocols]
    sizes = {len(t) for t in tables}
    if len(sizes) != 1:
        raise ValueError(f"per-class AP table: protocols {protocols} report different class counts {sorted(sizes)}")
    rows = []
    for entries in zip(*tables):
        first = entries[0]
        verb, _, obj = first["name"].partition(" ")
        rows.append([first["hoi"], first["name"], verb, obj, first["rare"], first["num_gt"],
                     *(e["ap"] for e in entries), *(e["ap_known_object"] for e in entries)])
    return per_class_columns(protocols), rows


def per_class_table(evaluations: Mapping[str, Mapping[str, Any]]):
    import wandb

    columns, rows = per_class_rows(evaluations)
    return wandb.Table(columns=columns, data=rows)


def read_row_evaluations(output_dir: Path, protocols: list[str]) -> dict[str, dict[str, Any]]:
    """``map_<protocol>.json`` of a finished row (written by ``evaluation.run``)."""
    out = {}
    for protocol in protocols:
        path = Path(output_dir) / f"map_{protocol}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the per-class AP of protocol {protocol!r} is missing (rerun the row "
                                    "with eval.overwrite=true)")
        out[protocol] = json.loads(path.read_text(encoding="utf-8"))
    return out


def _top_detections(path: Path, vocab, file_names: set[str], top_k: int) -> dict[str, list[tuple]]:
    """The ``top_k`` highest-scoring detections of each named image, as ``(human, object, name, score)``."""
    from ..evaluation.detections_io import read_detections_jsonl

    table = read_detections_jsonl(path, vocab)
    found: dict[str, list[tuple]] = defaultdict(list)
    for k, name in enumerate(table.file_names):
        if name in file_names:
            c = vocab.classes[int(table.hoi[k])]
            found[name].append((table.human_boxes[k].tolist(), table.object_boxes[k].tolist(),
                                f"{vocab.verbs[c.verb]} {vocab.objects[c.object]}", float(table.scores[k])))
    return {name: sorted(dets, key=lambda d: -d[3])[:top_k] for name, dets in found.items()}


def row_gallery(cfg, results: Mapping[str, Any], size: int, top_k: int) -> list:
    """The first ``size`` scored images of a row, each with the layout's GT boxes and the detector's
    ``top_k`` detections as two box groups (``ground_truth``, ``detections``)."""
    from PIL import Image

    from ..evaluation.generation import load_test_annotations, make_layouts
    from ..evaluation.run import DETECTIONS_NAME, IMAGES_DIR

    if size <= 0:
        return []
    output_dir = Path(str(cfg.output_dir)).expanduser()
    real = bool(results["settings"].get("real_images"))
    annotations = load_test_annotations(cfg.data)
    layouts = make_layouts(annotations.records, annotations.vocab, int(results["resolution"]), size)
    image_dir = Path(str(cfg.data.image_dir)).expanduser() if cfg.data.get("image_dir") else None
    paths = {layout.record.file_name: (image_dir / layout.record.file_name if real and image_dir
                                       else output_dir / IMAGES_DIR / layout.image_name) for layout in layouts}
    present = {name for name, path in paths.items() if path.is_file()}
    detections = _top_detections(output_dir / DETECTIONS_NAME, annotations.vocab, present, top_k)
    gallery = []
    for layout in layouts:
        name = layout.record.file_name
        if name not in present:
            continue
        with Image.open(paths[name]) as opened:
            image = opened.convert("RGB")
        dets = detections.get(name, [])
        groups = {"ground_truth": scene_box_data(layout.scene),
                  "detections": detection_box_data(dets, image.width, image.height)}
        top = f" · top detection: {dets[0][2]} {dets[0][3]:.2f}" if dets else " · no detection"
        gallery.append(boxed_image(image, scene_caption(layout.scene) + top, groups))
    return gallery
