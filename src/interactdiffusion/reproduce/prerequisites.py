"""Before any GPU time is spent: which inputs the chosen rows need, which are present, where to get the rest.

The inputs are read from each row's composed eval config (the same config the row will run with), so the check
can never disagree with the run about a path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Where each kind of input is published (nothing downloads at run time; the user fetches these once).
SOURCES = {
    "hico_annotations": "HICO-DET (hico_20160224_det.tar.gz: anno_bbox.mat, images/): "
    "https://websites.umich.edu/~ywchao/hico/",
    "hico_images": "HICO-DET test images (hico_20160224_det/images/test2015): https://websites.umich.edu/~ywchao/hico/",
    "sd14": "Stable Diffusion 1.4, diffusers format: https://huggingface.co/CompVis/stable-diffusion-v1-4",
    "sd15": "Stable Diffusion 1.5, diffusers format: https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5",
    "gligen": "GLIGEN text-box weights, diffusers format: https://huggingface.co/masterful/gligen-1-4-generation-text-box",
    "interactdiffusion_v1": "InteractDiffusion v1.0 (interact-diffusion-v1.pth): "
    "https://huggingface.co/jiuntian/interactiondiffusion-weight",
    "qpic": "QPIC ResNet-50 HICO-DET checkpoint: https://github.com/hitachi-rd-cv/qpic (releases)",
    "fgahoi": "FGAHOI HICO-DET checkpoints (Swin-Tiny, Swin-Large*+), linked from "
    "https://github.com/xiaomabufei/FGAHOI#results (configs/detector/fgahoi_swin_*.yaml name the files)",
    "inception": "torch-fidelity Inception weights: https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth",
}


@dataclass
class RequiredInput:
    name: str
    path: str
    kind: str  # "file" or "dir"
    source: str
    rows: list[str] = field(default_factory=list)

    @property
    def present(self) -> bool:
        p = Path(self.path).expanduser()
        return p.is_dir() if self.kind == "dir" else p.is_file()


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def inputs_of_row(row: str, cfg: Mapping[str, Any]) -> list[RequiredInput]:
    """The files and folders one row's eval config reads."""
    found: list[RequiredInput] = []
    annotations = _get(cfg, "data.annotations")
    if annotations:
        found.append(RequiredInput("test annotations", str(annotations), "file", SOURCES["hico_annotations"]))
    image_dir = _get(cfg, "data.image_dir")
    if image_dir:
        found.append(RequiredInput("test images", str(image_dir), "dir", SOURCES["hico_images"]))
    anno_mat = _get(cfg, "data.anno_mat")
    if anno_mat:
        found.append(RequiredInput("image-level labels (anno.mat)", str(anno_mat), "file", SOURCES["hico_annotations"]))
    real_row = bool(_get(cfg, "eval.real_images"))
    if not real_row and _get(cfg, "backbone.kind") == "diffusers":
        name = str(_get(cfg, "backbone.name") or "backbone")
        found.append(RequiredInput(f"backbone {name}", str(_get(cfg, "backbone.path")), "dir",
                                   SOURCES.get(name, "a diffusers-format Stable Diffusion folder")))
    weights = _get(cfg, "weights")
    if weights and not real_row:
        source = str(_get(cfg, "weights_source") or "see the row's config")
        kind = "dir" if Path(str(weights)).suffix == "" else "file"
        found.append(RequiredInput(f"{row} weights", str(weights), kind, source))
    init_from = _get(cfg, "model.init_from")
    if init_from and _get(cfg, "train.enabled"):
        found.append(RequiredInput(f"{row} initialisation", str(init_from), "file", SOURCES["gligen"]))
    detector_weights = _get(cfg, "detector.weights")
    if detector_weights:
        kind = str(_get(cfg, "detector.kind") or "detector")
        found.append(RequiredInput(f"detector {kind} weights", str(detector_weights), "file",
                                   SOURCES.get(kind, "see configs/detector/")))
    inception = _get(cfg, "metrics.inception_weights")
    if inception and _get(cfg, "metrics.extractor") == "inception":
        found.append(RequiredInput("Inception weights (FID/KID)", str(inception), "file", SOURCES["inception"]))
    for item in found:
        item.rows.append(row)
    return found


def collect_inputs(row_configs: Mapping[str, Mapping[str, Any]] | Iterable[tuple[str, Mapping[str, Any]]]
                   ) -> list[RequiredInput]:
    """Every input of every row, each path listed once with the rows that need it (``(row, cfg)`` pairs may
    repeat a row: one config per detector scoring it)."""
    merged: dict[tuple[str, str], RequiredInput] = {}
    for row, cfg in (row_configs.items() if isinstance(row_configs, Mapping) else row_configs):
        for item in inputs_of_row(row, cfg):
            key = (item.path, item.kind)
            if key in merged:
                merged[key].rows.extend(r for r in item.rows if r not in merged[key].rows)
            else:
                merged[key] = item
    return list(merged.values())


def format_report(inputs: list[RequiredInput]) -> str:
    lines = ["Prerequisites:"]
    for item in inputs:
        mark = "present" if item.present else "MISSING"
        lines.append(f"  [{mark:7}] {item.name}: {item.path}  (rows: {', '.join(item.rows)})")
        if not item.present:
            lines.append(f"             expected a {item.kind} there; get it from {item.source}")
    missing = sum(not i.present for i in inputs)
    lines.append(f"{len(inputs) - missing} present, {missing} missing.")
    return "\n".join(lines)
