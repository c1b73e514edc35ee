"""Layouts and their images: the test scenes of a row and the generation that draws them (resumable,
one rank's share at a time)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from PIL import Image

from ..data.records import ImageRecord
from ..resume import settings_difference
from ..scene import Scene
from ..vocab import HOIVocabulary
from . import report
from .image_io import chunks, image_suffix, save_image_atomic, to_uint8
from .settings import EvalError, EvalSettings, absolute, plain
from .sharding import Shard

log = logging.getLogger("interactdiffusion.eval")

GENERATION_RECORD = "generation.json"


@dataclass(frozen=True)
class Layout:
    """One test image: its GT record and the scene to draw (boxes normalised by the original size)."""

    record: ImageRecord
    scene: Scene
    image_format: str = "png"

    @property
    def image_name(self) -> str:
        return f"{self.scene.id}{image_suffix(self.image_format)}"


def make_layouts(records: Iterable[ImageRecord], vocab: HOIVocabulary, resolution: int, limit: int | None = None,
                 image_format: str = "png") -> list[Layout]:
    """The layouts of the records with ≥ 1 visible pair, in order, the first ``limit`` of them; their
    images are named ``<scene id>.<image_format>`` (the official ``<file_name>.jpg`` with ``jpg``)."""
    from ..data.layouts import layout_scene

    out: list[Layout] = []
    for record in records:
        if limit is not None and len(out) >= limit:
            break
        scene = layout_scene(record, vocab, resolution)
        if scene is not None:
            out.append(Layout(record, scene, image_format))
    ids = [layout.scene.id for layout in out]
    if len(set(ids)) != len(ids):
        raise EvalError("two test images map to the same scene id (file names that differ only in extension?)")
    return out


def every_test_image(records: Sequence[ImageRecord], layouts: Sequence[Layout]) -> list[Layout]:
    """The real-images row scores every test image (the Default setting: 9,658, not only the 9,546 with
    a layout): ``layouts`` plus, in file order, the images without a visible pair (their detections are
    false positives), as empty scenes. With ``eval.limit`` it stops at the last layout's image."""
    from ..data.transforms import scene_id_of

    by_name = {layout.record.file_name: layout for layout in layouts}
    if len(by_name) < sum(1 for r in records if r.pairs):  # eval.limit: up to the last layout's image
        records = records[: max(k for k, r in enumerate(records) if r.file_name in by_name) + 1]
    out = []
    for record in records:
        layout = by_name.get(record.file_name)
        if layout is None:
            scene = Scene(id=scene_id_of(record.file_name), extra={"file_name": record.file_name,
                                                                   "original_width": record.width,
                                                                   "original_height": record.height,
                                                                   "gt_pairs": []})
            layout = Layout(record, scene)
        out.append(layout)
    return out


def load_test_annotations(data: DictConfig):
    """The test split named by ``data.annotations`` (writing the synthetic data set first when asked)."""
    from ..data.annotations import AnnotationError, load_annotations

    synthetic = plain(data.get("synthetic"))
    if synthetic:
        from ..data.synthetic import ensure_synthetic_hicodet

        options = dict(synthetic)
        ensure_synthetic_hicodet(options.pop("root"), **options)
    path = data.get("annotations")
    if not path:
        raise EvalError("data.annotations is not set (anno_bbox.mat, test_hico.json or instances_test2015.json)")
    try:
        return load_annotations(
            path, split="test", vocabulary=data.get("vocabulary"), image_dir=data.get("image_dir"),
            cache_dir=data.get("cache_dir") or None,
        )
    except FileNotFoundError as error:
        raise EvalError(f"{error} (set data.annotations=PATH)") from None
    except AnnotationError as error:
        raise EvalError(str(error)) from None


# -- generation ------------------------------------------------------------------------------------------
def build_pipeline(backbone_cfg: DictConfig | dict, model_cfg: DictConfig | dict | None, weights: str | None,
                   settings: EvalSettings):
    """The generation pipeline for a backbone config + weights, on ``settings.device``."""
    from ..generation.building import PipelineError, load_generation_pipeline

    try:
        return load_generation_pipeline(
            dict(plain(backbone_cfg)), (plain(model_cfg) or {}).get("grounding"), weights,
            precision=settings.precision, device=settings.device, scheduler=settings.scheduler,
            scheduler_kwargs=settings.scheduler_kwargs,
        )
    except PipelineError as error:
        raise EvalError(f"eval.{error.setting}: {error}" if error.setting else str(error)) from None


def generate_images(pipe, scenes: Sequence[Scene], settings: EvalSettings,
                    on_batch: Callable[[Sequence[Scene], list[Image.Image]], None] | None = None) -> list[Image.Image]:
    """Images of ``scenes`` at ``resolution``² with the evaluation protocol; every phrase is embedded once
    first, so nothing depends on how scenes are batched. ``on_batch`` (e.g. saving) sees each batch;
    the images are returned only when it is not given (long runs keep nothing in memory)."""
    from ..generation.sampling import call_pipeline
    from ..generation.scenes import at_size, scene_phrases

    size = settings.resolution
    phrases = scene_phrases(scenes)
    if phrases:
        pipe.encode_phrases(phrases)
    kept: list[Image.Image] = []
    for batch in chunks(list(scenes), settings.batch_size):
        batch = [at_size(s, size) for s in batch]
        images = call_pipeline(
            pipe, batch, (size, size), steps=settings.steps, guidance_scale=settings.guidance_scale,
            beta=settings.beta, scheduled_sampling=settings.scheduled_sampling, seed=settings.seed,
            negative_prompt=settings.negative_prompt,
        ).images
        images = [Image.fromarray(to_uint8(image, settings.quantize)) for image in images]
        if on_batch is not None:
            on_batch(batch, images)
        else:
            kept.extend(images)
    return kept


def _check_generation_record(images_dir: Path, record: dict[str, Any], mine: Sequence[Layout], overwrite: bool) -> None:
    """Images already there must come from the same settings; with ``overwrite`` stale ones are deleted
    (each rank deletes only its own share, so ranks never race)."""
    path = images_dir / GENERATION_RECORD
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        old = {}
    detail = settings_difference(old, record)
    if detail is None:
        return
    if not overwrite:
        raise EvalError(
            f"{images_dir} holds images made with other settings ({detail}); use another row / output_dir, "
            "or eval.overwrite=true to delete them and generate again"
        )
    removed = 0
    for layout in mine:
        image = images_dir / layout.image_name
        if image.exists():
            image.unlink()
            removed += 1
    log.warning(f"eval.overwrite=true: deleted {removed} images made with other settings ({detail})")


def generate_row_images(
    cfg: DictConfig, layouts: Sequence[Layout], images_dir: Path, settings: EvalSettings, shard: Shard,
    record: dict[str, Any],
) -> int:
    """This rank's missing images, written one by one; returns how many were generated."""
    mine = shard.take(layouts)
    _check_generation_record(images_dir, record, mine, settings.overwrite)
    images_dir.mkdir(parents=True, exist_ok=True)
    if shard.is_main:
        report.write_json_atomic(images_dir / GENERATION_RECORD, record)
    todo = [layout for layout in mine if not (images_dir / layout.image_name).is_file()]
    prefix = f"[rank {shard.rank}/{shard.world_size}] " if shard.distributed else ""
    log.info(f"{prefix}{len(mine) - len(todo)} of {len(mine)} images already in {images_dir}; generating {len(todo)}")
    if not todo:
        return 0
    pipe = build_pipeline(cfg.backbone, cfg.get("model"), absolute(cfg.get("weights")), settings)
    started = time.perf_counter()
    done = 0
    report_every = max(1, len(todo) // 20)

    def save(batch: Sequence[Scene], images: list[Image.Image]) -> None:
        nonlocal done
        for scene, image in zip(batch, images):
            name = f"{scene.id}{image_suffix(settings.image_format)}"
            save_image_atomic(image, images_dir / name, settings.image_format, settings.jpeg_quality)
        before, done = done, done + len(batch)
        if done // report_every != before // report_every or done == len(todo):
            rate = done / max(time.perf_counter() - started, 1e-9)
            eta = (len(todo) - done) / rate if rate > 0 else float("nan")
            log.info(f"{prefix}generated {done}/{len(todo)} ({rate:.2f} images/s, eta {eta / 60:.1f} min)")

    generate_images(pipe, [layout.scene for layout in todo], settings, on_batch=save)
    del pipe
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return done
