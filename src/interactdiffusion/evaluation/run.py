"""The evaluation job behind ``interactdiffusion-eval``: one row of the paper's table.

1. **Layouts**: the test images with ≥ 1 visible pair, in annotation-file order (``eval.limit`` keeps
   the first N; the real-images row also scores the images without one), each a ``Scene`` whose boxes are
   normalised by the original width and height
   (``data.layouts.layout_scene``), drawn squashed to ``resolution``².
2. **Generate** (skipped for the real-images row): every rank draws its share (``sharding.Shard``) into
   ``<output_dir>/images/<scene id>.<eval.image_format>`` (the paper profile: ``.jpg`` at quality 75 after a
   truncating cast, as the official batch inference wrote them); an image is written under a temporary name and renamed, and the
   ones already there are skipped, so a rerun resumes image by image. ``images/generation.json``
   records the settings the images were made with; other settings are an error (or, with
   ``eval.overwrite``, the stale images are deleted). Rank 0 then waits for every image.
3. **Detect** (rank 0): ``instantiate(cfg.detector)`` → ``build_detector(..., vocabulary, device)``;
   detections go to ``detections.jsonl`` in pixels of the scored image.
4. **Score**: the GT for generated ``W'×H'`` images is the original boxes scaled by ``W'/W``, ``H'/H``
   and truncated to int (REFERENCE §5); the real-images row uses the GT as it is. mAP under each
   protocol of ``eval.protocols``; FID and KID against the real test images resized to ``resolution``²
   (reference features cached by the metrics). ``results.json`` (schema in ``report.py``),
   ``results.md`` and ``map_<protocol>.json`` (per-class AP) are written last, so a row with a
   ``results.json`` is finished: it is skipped on a rerun unless ``eval.overwrite=true``.

The pieces live in small modules shared with the training callback
(``training.eval_callback.HOIEvalCallback``): ``settings`` (the ``eval.*`` group, what a row's numbers
depend on, pre-flight checks), ``generation`` (layouts, resumable generation), ``scoring`` (detector,
FID/KID metrics, GT rescaling, mAP), ``image_io``, ``sharding`` and ``report`` (``results.json``,
``results.md``, logger metrics).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..atomic import write_file_atomic
from ..data.records import ImageRecord
from . import report
from .detectors.base import ImageDetections, as_image_detections
from .generation import Layout, every_test_image, generate_row_images, load_test_annotations, make_layouts
from .image_io import decoded_batches
from .scoring import (
    build_detector,
    build_metrics,
    detect_images,
    detector_identity,
    generated_ground_truth,
    reference_batches,
    score_map,
)
from .settings import (
    EvalError,
    EvalSettings,
    absolute,
    backbone_identity,
    device_name,
    finished_row,
    generation_record,
    is_meaningful,
    metrics_identity,
    preflight,
    row_settings,
)
from .sharding import Shard, ShardError, distributed_barrier, wait_for_files

log = logging.getLogger("interactdiffusion.eval")

IMAGES_DIR = "images"
RESULTS_NAME = "results.json"
TABLE_NAME = "results.md"
DETECTIONS_NAME = "detections.jsonl"
LAYOUTS_NAME = "layouts.jsonl"
RUN_INFO_NAME = "run.json"

__all__ = ["EvalError", "EvalSettings", "build_detector", "log_to_loggers", "run_evaluation"]


@dataclass
class ScoredSet:
    """The images a row scores (generated, or the real ones), their pixel size and the GT in that space."""

    layouts: list[Layout]
    paths: list[Path]
    sizes: list[tuple[int, int]]
    gt: list[ImageRecord]
    real_paths: list[Path]  # the FID/KID reference: real images of the layouts that exist
    missing_real: list[str]


def scored_set(layouts: Sequence[Layout], settings: EvalSettings, images_dir: Path, image_dir: Path | None) -> ScoredSet:
    real_paths: list[Path] = []
    missing_real: list[str] = []
    for layout in layouts if image_dir is not None else ():
        path = image_dir / layout.record.file_name
        if path.is_file():
            real_paths.append(path)
        else:
            missing_real.append(layout.record.file_name)
    if missing_real:
        log.warning(f"{len(missing_real)} of {len(layouts)} real test images are missing under {image_dir} "
                    f"(first: {missing_real[0]}); they are left out of the FID reference"
                    + (" and of the scored set" if settings.real_images else ""))
    if settings.real_images:
        absent = set(missing_real)
        scored = [layout for layout in layouts if layout.record.file_name not in absent]
        if not scored:
            raise EvalError(f"none of the {len(layouts)} real test images is under {image_dir}")
        return ScoredSet(scored, [image_dir / layout.record.file_name for layout in scored],
                         [(layout.record.width, layout.record.height) for layout in scored],
                         [layout.record for layout in scored], real_paths, missing_real)
    size = settings.resolution
    return ScoredSet(list(layouts), [images_dir / layout.image_name for layout in layouts], [(size, size)] * len(layouts),
                     generated_ground_truth([layout.record for layout in layouts], size), real_paths, missing_real)


class _Clock:
    """Seconds spent per phase: ``with clock("detect"): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = {"generate": 0.0, "detect": 0.0, "metrics": 0.0}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start


def _images_ready(cfg: DictConfig, layouts: Sequence[Layout], settings: EvalSettings, shard: Shard, output_dir: Path,
                  started_wall: float) -> int:
    """Generate this rank's share; on rank 0 wait for the others' (returns how many this rank drew)."""
    images_dir = output_dir / IMAGES_DIR
    markers = output_dir / "shards"
    shard.clear_markers(markers)
    try:
        generated = generate_row_images(cfg, layouts, images_dir, settings, shard, generation_record(cfg, settings))
    except BaseException as error:
        if shard.distributed:
            shard.mark(markers, "failed", f"{type(error).__name__}: {error}")
        raise
    if shard.distributed:
        shard.mark(markers, "done")
        if not distributed_barrier() and shard.is_main:
            wait_for_files([images_dir / layout.image_name for layout in layouts], shard, markers,
                           since=started_wall, timeout_s=settings.gather_timeout_s, log=log)
    if shard.is_main:
        missing = [layout.image_name for layout in layouts if not (images_dir / layout.image_name).is_file()]
        if missing:
            raise ShardError(f"{len(missing)} images are missing in {images_dir} (e.g. {missing[0]}); run again")
    return generated


def _detect_all(detector, scored: ScoredSet, output_dir: Path, settings: EvalSettings, metrics, clock: _Clock):
    """Detections of every scored image (written to detections.jsonl as they come); the generated images
    also feed the metrics in the same pass, so each image is decoded once."""
    from .detections_io import DetectionsWriter

    path = output_dir / DETECTIONS_NAME
    decode = max(int(getattr(detector, "batch_size", 1) or 1), settings.batch_size)
    per_image: list[ImageDetections] = []  # columns per image: no object per triplet at full scale

    def write(tmp: Path) -> None:
        with DetectionsWriter(tmp, append=False) as writer:
            for images in decoded_batches(scored.paths, decode, settings.num_workers):
                done = len(per_image)
                with clock("detect"):
                    found = [as_image_detections(d) for d in
                             detect_images(detector, images, scored.sizes[done : done + len(images)])]
                    for layout, dets in zip(scored.layouts[done : done + len(images)], found):
                        writer.write(layout.record.file_name, dets)
                per_image.extend(found)
                if metrics is not None:
                    with clock("metrics"):
                        metrics.update_fake(torch.stack(images))

    write_file_atomic(path, write)
    log.info(f"{sum(len(d) for d in per_image)} detections on {len(per_image)} images -> {path}")
    return per_image


def _image_quality(metrics, scored: ScoredSet, settings: EvalSettings) -> tuple[float | None, float | None, float | None]:
    if not scored.real_paths:
        log.warning("no real test images (data.image_dir): FID and KID are not computed")
        return None, None, None
    metrics.add_reference(
        [p.name for p in scored.real_paths],
        reference_batches(scored.real_paths, settings.resolution, settings.batch_size, settings.num_workers),
        resolution=settings.resolution,
    )
    values = metrics.compute()
    return tuple(report.finite_or_none(values.get(k)) for k in ("fid", "kid_mean", "kid_std"))


def run_evaluation(cfg: DictConfig) -> dict[str, Any] | None:
    """Evaluate one row (see the module docstring); returns ``results.json``'s dict on rank 0, else None."""
    started, started_wall = time.perf_counter(), time.time()
    shard = Shard.from_env()
    settings = EvalSettings.from_config(cfg.eval, shard)
    output_dir = Path(str(cfg.output_dir)).expanduser()
    results_path = output_dir / RESULTS_NAME
    wanted = row_settings(cfg, settings)
    row = str(cfg.get("row") or "default")
    if not settings.overwrite:
        existing = finished_row(results_path, wanted)
        if existing is not None:
            log.info(f"row {row!r} is finished ({results_path}); skipped (eval.overwrite=true evaluates it again)")
            return existing if shard.is_main else None

    preflight(cfg, settings)
    annotations = load_test_annotations(cfg.data)
    vocab = annotations.vocab
    layouts = make_layouts(annotations.records, vocab, settings.resolution, settings.limit, settings.image_format)
    if not layouts:
        raise EvalError(f"{annotations.source}: no test image with a visible pair")
    log.info(f"row {row!r}: {len(layouts)} test layouts from {annotations.source}"
             + (f" (eval.limit={settings.limit})" if settings.limit else ""))
    output_dir.mkdir(parents=True, exist_ok=True)
    image_dir = Path(str(cfg.data.image_dir)).expanduser() if cfg.data.get("image_dir") else None
    if settings.real_images and image_dir is None:
        raise EvalError("eval.real_images=true needs data.image_dir (the real test images)")
    num_layouts = len(layouts)
    if settings.real_images:  # Default setting: every test image, also those without a visible pair
        layouts = every_test_image(annotations.records, layouts)

    # 1. images (every rank), then rank 0 alone
    clock = _Clock()
    generated = 0
    if not settings.real_images:
        with clock("generate"):
            generated = _images_ready(cfg, layouts, settings, shard, output_dir, started_wall)
    if not shard.is_main:
        return None
    scored = scored_set(layouts, settings, output_dir / IMAGES_DIR, image_dir)

    # 2. detection (+ the generated side of FID/KID), 3. mAP, 4. FID/KID
    metrics = None
    if not settings.real_images and cfg.get("metrics") is not None:
        with clock("metrics"):
            metrics = build_metrics(cfg.metrics, settings.device)
    with clock("detect"):
        detector = build_detector(cfg.detector, vocab, settings.device)
    identity = detector_identity(cfg.detector, detector)
    per_image = _detect_all(detector, scored, output_dir, settings, metrics, clock)
    del detector
    with clock("metrics"):
        evaluations = score_map(scored.gt, per_image, vocab, settings.protocols, absolute(cfg.data.get("anno_mat")))
        fid = kid_mean = kid_std = None
        if metrics is not None:
            fid, kid_mean, kid_std = _image_quality(metrics, scored, settings)

    results = {
        "row": row,
        "label": str(cfg.get("label") or row),
        "backbone": backbone_identity(cfg.backbone)[0],
        "weights": absolute(cfg.get("weights")),
        "detector": identity,
        "metrics_extractor": getattr(getattr(metrics, "extractor", None), "identity", None)
        or metrics_identity(cfg.get("metrics")),
        "num_layouts": num_layouts,
        "num_images": len(scored.layouts),
        "resolution": settings.resolution,
        "fid": fid,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "map": {p: report.map_summary(evaluations[p]) for p in settings.protocols},
        "wall_time_s": {**{k: round(v, 3) for k, v in clock.seconds.items()},
                        "total": round(time.perf_counter() - started, 3)},
        "device": device_name(settings.device),
        "settings": wanted,
        "meaningful": is_meaningful(cfg, identity["name"], metrics is not None, settings.real_images),
    }
    report.check_results(results)
    _write_row(output_dir, results, evaluations, scored, {
        "generated_this_run": generated,
        "world_size": shard.world_size,
        "missing_real_images": scored.missing_real,
        "detections": DETECTIONS_NAME,
        "detections_pixel_space": "original image" if settings.real_images
        else f"generated {settings.resolution}x{settings.resolution}",
        "rescore": _rescore_command(cfg, settings, output_dir),
        "annotation_source": str(annotations.source),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    log.info("\n" + report.results_table([results]))
    log.info(f"row {row!r} done in {results['wall_time_s']['total']:.1f} s -> {results_path}")
    return results


def _rescore_command(cfg: DictConfig, settings: EvalSettings, output_dir: Path) -> str:
    """The interactdiffusion-hoi-eval line that scores this row's detections again (any protocol)."""
    size = "" if settings.real_images else f" --gt-size {settings.resolution} {settings.resolution}"
    vocabulary = absolute(cfg.data.get("vocabulary") or cfg.data.annotations)
    folder = output_dir.resolve()
    return (f"interactdiffusion-hoi-eval --gt {folder / LAYOUTS_NAME} --vocabulary {vocabulary}{size} "
            f"--detections {folder / DETECTIONS_NAME} --protocol fgahoi --out {folder / 'rescored.json'}")


def _write_row(output_dir: Path, results: dict[str, Any], evaluations: dict[str, Any], scored: ScoredSet,
               info: dict[str, Any]) -> None:
    for protocol, evaluation in evaluations.items():
        report.write_json_atomic(output_dir / f"map_{protocol}.json", evaluation)
    _write_layouts(output_dir / LAYOUTS_NAME, scored.layouts)
    report.write_json_atomic(output_dir / RUN_INFO_NAME, info)
    warnings = report.known_object_warnings(evaluations)
    for warning in warnings:
        log.warning(warning.replace("**", ""))
    report.write_text_atomic(output_dir / TABLE_NAME, report.results_markdown(results, warnings))
    report.write_json_atomic(output_dir / RESULTS_NAME, results)  # last: its presence marks the row finished


def _write_layouts(path: Path, layouts: Sequence[Layout]) -> None:
    text = "".join(json.dumps(layout.scene.to_dict()) + "\n" for layout in layouts)
    report.write_text_atomic(path, text)


def log_to_loggers(cfg: DictConfig, results: dict[str, Any]) -> dict[str, float]:
    """Send the row's numbers (and its resolved config) to the configured Lightning loggers."""
    from ..utils import instantiate_loggers

    metrics = report.logger_metrics(results)
    loggers = instantiate_loggers(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams({"config": OmegaConf.to_container(cfg, resolve=True), "row": results["row"]})
        logger.log_metrics(metrics, step=0)
        if hasattr(logger, "log_eval_row"):  # wandb: tables and gallery (dashboards.logger)
            logger.log_eval_row(cfg, results)
        logger.finalize("success")
        logger.save()
    return metrics
